//! Write the sample streams: `cargo run -p xenguest --example write_sample DIR`.
use xenguest::stream::sample::{
    sample_checkpointed_libxl_stream, sample_pv_stream, sample_xl_save_file,
};

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    std::fs::write(format!("{dir}/sample.libxc"), sample_pv_stream())?;
    std::fs::write(format!("{dir}/sample.xl"), sample_xl_save_file())?;
    std::fs::write(
        format!("{dir}/sample-checkpointed.libxl"),
        sample_checkpointed_libxl_stream(),
    )?;
    Ok(())
}
