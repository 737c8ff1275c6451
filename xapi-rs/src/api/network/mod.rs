//! `network`, `PIF`: the networks a host has on its first start
//! ([`local`]), found in dom0 as the reference's installer leaves them: a
//! Linux bridge per physical NIC (`xenbr0` over `eth0`, in the lab over
//! `eth1`). A VIF's network names the bridge its backend joins at start
//! (`xenops::vif`).

pub mod local;
