//! The baseline every whole-pipeline figure is a ratio against: a loop that only asks libpcap
//! for the next packet and counts. No reader of capture files can be faster than this.
//!
//! `cargo run --release --example bare_loop -- FILE...`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut packets = 0u64;
    let mut bytes = 0u64;
    for path in std::env::args().skip(1) {
        let mut cap = match pcap::Capture::from_file(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::from(2);
            }
        };
        loop {
            match cap.next_packet() {
                Ok(p) => {
                    packets += 1;
                    bytes += u64::from(p.header.caplen);
                }
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => {
                    eprintln!("{path}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    println!("{packets} packets {bytes} bytes");
    ExitCode::SUCCESS
}
