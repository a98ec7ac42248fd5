fn main() { println!("wardline-sensor"); }
