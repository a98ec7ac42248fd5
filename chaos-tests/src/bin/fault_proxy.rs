//! `wardline-fault-proxy`: forward loopback TCP / UDP links with controllable faults
//! (loss, delay and jitter, duplicates, reordering, partition), for chaos runs by hand.
//!
//!   wardline-fault-proxy run --udp 127.0.0.1:5433=127.0.0.1:4433 --control /tmp/fp.sock
//!   wardline-fault-proxy ctl --control /tmp/fp.sock loss 0.2

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use wardline_chaos_tests::fault_proxy::{serve_control, FaultProxy, Transport};

#[derive(Parser)]
#[command(name = "wardline-fault-proxy", about = "Loopback TCP/UDP proxy with controllable network faults")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Forward links until killed; faults are changed through the control socket.
    Run {
        /// A TCP link LISTEN=UPSTREAM (repeatable).
        #[arg(long)]
        tcp: Vec<String>,
        /// A UDP link LISTEN=UPSTREAM (repeatable; QUIC works through it).
        #[arg(long)]
        udp: Vec<String>,
        /// Unix socket taking commands (created 0600).
        #[arg(long)]
        control: PathBuf,
        /// Seed of the random fault choices (printed; give it again to replay).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Send one command to a running proxy and print its answer.
    Ctl {
        #[arg(long)]
        control: PathBuf,
        /// loss P | delay MS [JITTER_MS] | duplicate P | reorder P | partition | heal | cut | faults | stats
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
}

fn link(spec: &str) -> Result<(SocketAddr, SocketAddr)> {
    let (l, u) = spec.split_once('=').with_context(|| format!("link {spec:?}: expected LISTEN=UPSTREAM"))?;
    Ok((
        l.parse().with_context(|| format!("link {spec:?}: bad listen address {l:?}"))?,
        u.parse().with_context(|| format!("link {spec:?}: bad upstream address {u:?}"))?,
    ))
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("wardline-fault-proxy: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run { tcp, udp, control, seed } => {
            if tcp.is_empty() && udp.is_empty() {
                bail!("give at least one --tcp or --udp LISTEN=UPSTREAM link");
            }
            let seed = seed.unwrap_or_else(rand::random);
            eprintln!("wardline-fault-proxy: seed {seed} (replay with --seed {seed})");
            let mut proxies = Vec::new();
            for (transport, specs) in [(Transport::Tcp, &tcp), (Transport::Udp, &udp)] {
                for spec in specs {
                    let (l, u) = link(spec)?;
                    let p = FaultProxy::start(transport, l, u, seed.wrapping_add(proxies.len() as u64))
                        .with_context(|| format!("cannot listen on {l} ({transport:?})"))?;
                    eprintln!("wardline-fault-proxy: {transport:?} {} -> {}", p.listen, p.upstream);
                    proxies.push(p);
                }
            }
            let handles = proxies.iter().map(FaultProxy::handle).collect();
            serve_control(&control, handles)
                .with_context(|| format!("cannot serve the control socket {}", control.display()))
        }
        Cmd::Ctl { control, command } => {
            let mut s = UnixStream::connect(&control)
                .with_context(|| format!("cannot reach the proxy's control socket {}", control.display()))?;
            writeln!(s, "{}", command.join(" "))?;
            let mut answer = String::new();
            BufReader::new(s).read_line(&mut answer)?;
            print!("{answer}");
            if answer.starts_with("error") {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}
