//! `weft ca`: create the mesh CA and issue certificates from it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use weft_identity::{Ca, SpiffeId, TrustDomain, WorkloadKey, ca};

use super::parse_ttl;

/// The mesh certificate authority (Istio's plug-in CA file layout).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a self-signed ECDSA P-256 root CA in DIR (ca-cert.pem,
    /// ca-key.pem, root-cert.pem, cert-chain.pem); never overwrites one.
    Init {
        /// Directory for the CA files.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// SPIFFE trust domain of the mesh.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Issue a workload certificate and key into OUT (cert-chain.pem with
    /// the leaf first, key.pem, root-cert.pem), for VMs and tests.
    Issue {
        /// Directory of the CA (self-signed or plugged in).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
        /// Where to write the files.
        #[arg(long, value_name = "OUT")]
        out_dir: PathBuf,
        /// Certificate lifetime (capped by the CA at 7 days).
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init { dir, trust_domain } => {
            let td = TrustDomain::new(&trust_domain)
                .with_context(|| format!("--trust-domain {trust_domain}"))?;
            let ca = Ca::init(&dir, &td, SystemTime::now())?;
            println!(
                "created a self-signed root CA for trust domain {} in {}",
                ca.trust_domain(),
                dir.display()
            );
            for f in [ca::CA_CERT, ca::CA_KEY, ca::ROOT_CERT, ca::CERT_CHAIN] {
                println!("  {}", dir.join(f).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Issue {
            dir,
            spiffe_id,
            out_dir,
            ttl,
        } => {
            let id: SpiffeId = spiffe_id
                .parse()
                .with_context(|| format!("--spiffe-id {spiffe_id}"))?;
            let ttl = parse_ttl(&ttl)?;
            let ca = Ca::load(&dir, Some(id.trust_domain()))?;
            let key = WorkloadKey::generate()?;
            let chain = ca.sign_csr(&key.csr(&id)?, &id, Some(ttl), SystemTime::now())?;
            ca::write_issued(&out_dir, &chain, &key.private_key_pem(), ca.bundle())?;
            println!("issued {id} into {}", out_dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
