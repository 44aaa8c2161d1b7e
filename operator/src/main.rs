use std::process::ExitCode;

fn main() -> ExitCode {
    match caduceus_operator::crd::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot serialise the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}
