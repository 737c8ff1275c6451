fn main() { eprintln!("xe: not implemented yet"); std::process::exit(1) }
