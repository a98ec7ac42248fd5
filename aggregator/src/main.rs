fn main() { println!("wardline-aggregator"); }
