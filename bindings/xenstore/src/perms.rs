//! Node permissions as xenstored spells them: `r5` = domain 5 may read.

use std::fmt;
use std::str::FromStr;

/// What a domain may do with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing (`n`).
    None,
    /// Read (`r`).
    Read,
    /// Write (`w`).
    Write,
    /// Read and write (`b`).
    Both,
}

/// One permission entry. In a node's list the first entry names the owner
/// and gives the access of every domain not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub domid: u32,
    /// Its access.
    pub access: Access,
}

impl Perm {
    /// A permission entry.
    pub fn new(domid: u32, access: Access) -> Self {
        Perm { domid, access }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        write!(f, "{c}{}", self.domid)
    }
}

/// A permission string that is not `[nrwb]<domid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPerm;

impl FromStr for Perm {
    type Err = BadPerm;
    fn from_str(s: &str) -> Result<Self, BadPerm> {
        let mut cs = s.chars();
        let access = match cs.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(BadPerm),
        };
        let domid = cs.as_str().parse().map_err(|_| BadPerm)?;
        Ok(Perm { domid, access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for s in ["n0", "r5", "w12", "b32752"] {
            assert_eq!(s.parse::<Perm>().unwrap().to_string(), s);
        }
        assert_eq!("r7".parse::<Perm>().unwrap(), Perm::new(7, Access::Read));
        assert!("x1".parse::<Perm>().is_err());
        assert!("r".parse::<Perm>().is_err());
    }
}
