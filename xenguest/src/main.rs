fn main() {
    eprintln!("xenguest: not implemented yet");
    std::process::exit(1)
}
