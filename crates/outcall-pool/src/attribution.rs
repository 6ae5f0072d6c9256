//! Number attribution (号码归属地) from a `phone.dat` file.
//!
//! Format (little-endian): 4-byte ASCII version; `i32` offset of the first index entry; records
//! `province|city|zip|area_code\0`; then 9-byte index entries (`i32` seven-digit prefix, `i32`
//! record offset, `u8` carrier), sorted by prefix. The file is read once into memory (4.5 MB for
//! 499,527 prefixes) and looked up by binary search. The carrier is the number's original one:
//! numbers have been portable between carriers since 2019.

use serde::Serialize;
use std::path::Path;

/// The carrier a prefix was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    ChinaMobile,
    ChinaUnicom,
    ChinaTelecom,
    /// Virtual operators on each network.
    VirtualTelecom,
    VirtualUnicom,
    VirtualMobile,
    ChinaBroadnet,
    Unknown,
}

impl Carrier {
    fn from_code(c: u8) -> Carrier {
        match c {
            1 => Carrier::ChinaMobile,
            2 => Carrier::ChinaUnicom,
            3 => Carrier::ChinaTelecom,
            4 => Carrier::VirtualTelecom,
            5 => Carrier::VirtualUnicom,
            6 => Carrier::VirtualMobile,
            7 => Carrier::ChinaBroadnet,
            _ => Carrier::Unknown,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Carrier::ChinaMobile => "china_mobile",
            Carrier::ChinaUnicom => "china_unicom",
            Carrier::ChinaTelecom => "china_telecom",
            Carrier::VirtualTelecom => "virtual_telecom",
            Carrier::VirtualUnicom => "virtual_unicom",
            Carrier::VirtualMobile => "virtual_mobile",
            Carrier::ChinaBroadnet => "china_broadnet",
            Carrier::Unknown => "unknown",
        }
    }
}

/// Where a number is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    pub province: String,
    pub city: String,
    pub zip: String,
    pub area_code: String,
    pub carrier: Carrier,
    /// Which source answered (`phone.dat`, `libphonenumber`).
    pub source: &'static str,
}

/// Errors reading an attribution file.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a phone.dat file: {reason}")]
    Format { path: String, reason: String },
}

/// An attribution database loaded from `phone.dat`.
pub struct PhoneDat {
    data: Vec<u8>,
    index_start: usize,
    entries: usize,
    version: String,
}

impl std::fmt::Debug for PhoneDat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PhoneDat(version {}, {} prefixes)",
            self.version, self.entries
        )
    }
}

const ENTRY: usize = 9;

impl PhoneDat {
    /// Reads and checks a `phone.dat` file.
    pub fn open(path: &Path) -> Result<PhoneDat, AttributionError> {
        let p = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| AttributionError::Io {
            path: p.clone(),
            source,
        })?;
        PhoneDat::from_bytes(data).map_err(|reason| AttributionError::Format { path: p, reason })
    }

    /// Parses the bytes of a `phone.dat` file.
    pub fn from_bytes(data: Vec<u8>) -> Result<PhoneDat, String> {
        if data.len() < 8 {
            return Err("shorter than its header".into());
        }
        let version = String::from_utf8_lossy(&data[..4]).to_string();
        let index_start = i32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        let index_start = usize::try_from(index_start).map_err(|_| "negative index offset")?;
        if index_start < 8
            || index_start > data.len()
            || !(data.len() - index_start).is_multiple_of(ENTRY)
        {
            return Err(format!("index offset {index_start} does not fit the file"));
        }
        let entries = (data.len() - index_start) / ENTRY;
        if entries == 0 {
            return Err("no index entries".into());
        }
        Ok(PhoneDat {
            data,
            index_start,
            entries,
            version,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn entry(&self, i: usize) -> (i32, usize, u8) {
        let o = self.index_start + i * ENTRY;
        let d = &self.data[o..o + ENTRY];
        let prefix = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let offset = i32::from_le_bytes([d[4], d[5], d[6], d[7]]);
        (prefix, usize::try_from(offset).unwrap_or(usize::MAX), d[8])
    }

    /// Looks up a Chinese mobile number: 11 digits starting with 1, or E.164 `+861…`.
    pub fn lookup(&self, number: &str) -> Option<Attribution> {
        let national = number.strip_prefix("+86").unwrap_or(number);
        if national.len() != 11 || !national.starts_with('1') {
            return None;
        }
        let prefix: i32 = national.get(..7)?.parse().ok()?;
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 < prefix {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo >= self.entries {
            return None;
        }
        let (p, offset, carrier) = self.entry(lo);
        if p != prefix || offset >= self.index_start {
            return None;
        }
        let end = self.data[offset..self.index_start]
            .iter()
            .position(|b| *b == 0)?
            + offset;
        let text = std::str::from_utf8(&self.data[offset..end]).ok()?;
        let mut f = text.split('|');
        Some(Attribution {
            province: f.next()?.to_string(),
            city: f.next()?.to_string(),
            zip: f.next().unwrap_or("").to_string(),
            area_code: f.next().unwrap_or("").to_string(),
            carrier: Carrier::from_code(carrier),
            source: "phone.dat",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared test data beside the repository (never copied into it).
    fn shared() -> PhoneDat {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/phone.dat");
        PhoneDat::open(&p).expect("../shared/data/phone.dat is present")
    }

    #[test]
    fn real_file_known_prefixes() {
        let db = shared();
        assert_eq!(db.version(), "2312");
        assert_eq!(db.len(), 499_527);
        let a = db.lookup("13800138000").unwrap();
        assert_eq!((a.province.as_str(), a.city.as_str()), ("北京", "北京"));
        assert_eq!(
            (a.area_code.as_str(), a.carrier),
            ("010", Carrier::ChinaMobile)
        );
        let b = db.lookup("+8613900001234").unwrap();
        assert_eq!((b.province.as_str(), b.city.as_str()), ("新疆", "乌鲁木齐"));
        assert_eq!(b.area_code, "0991");
        assert_eq!(
            db.lookup("18600001234").unwrap().carrier,
            Carrier::ChinaUnicom
        );
        assert_eq!(
            db.lookup("17000001234").unwrap().carrier,
            Carrier::ChinaTelecom
        );
    }

    #[test]
    fn non_mobile_and_unknown_prefixes_are_none() {
        let db = shared();
        assert_eq!(db.lookup("075512345678"), None);
        assert_eq!(db.lookup("1380013"), None);
        assert_eq!(db.lookup("+12125550100"), None);
        assert_eq!(
            db.lookup("10000000000"),
            None,
            "no 100xxxx prefix is issued"
        );
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        assert!(PhoneDat::from_bytes(vec![]).is_err());
        assert!(PhoneDat::from_bytes(b"2312\xff\xff\xff\xff".to_vec()).is_err());
        let mut d = b"2312".to_vec();
        d.extend(100i32.to_le_bytes());
        assert!(PhoneDat::from_bytes(d).is_err());
        // A valid header whose entry points past the records.
        let mut d = b"2312".to_vec();
        d.extend(8i32.to_le_bytes());
        d.extend(1380013i32.to_le_bytes());
        d.extend(9999i32.to_le_bytes());
        d.push(1);
        let db = PhoneDat::from_bytes(d).unwrap();
        assert_eq!(db.lookup("13800138000"), None);
    }
}
