fn main() { eprintln!("xapi-rs: not implemented yet"); std::process::exit(1) }
