//! Number normalisation (libphonenumber rules through the `phonenumber` crate) and the
//! attribution chain: `phone.dat` for Chinese mobiles when configured, then libphonenumber's
//! own geocoding and carrier files (embedded at build time) for landlines, 19x segments missing
//! from `phone.dat`, and as the fallback.

use crate::attribution::{Attribution, Carrier, PhoneDat};
use phonenumber::country::Id;
use phonenumber::{Mode, Type};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Why a number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("empty number")]
    Empty,
    #[error("not a phone number ({0})")]
    Unparsable(String),
    #[error("not a valid number for its country")]
    Invalid,
}

/// A normalised number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// `+8613812345678`
    pub e164: String,
    /// Country calling code (`86`).
    pub country_code: u16,
    /// `mobile`, `fixed_line`, `fixed_line_or_mobile`, `toll_free`, … (libphonenumber's type).
    pub kind: &'static str,
}

/// Parses and validates a number; national forms use `default_region` (`CN`).
pub fn normalize(raw: &str, default_region: &str) -> Result<Normalized, NumberError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(NumberError::Empty);
    }
    let region: Option<Id> = default_region.parse().ok();
    let n = phonenumber::parse(region, s).map_err(|e| NumberError::Unparsable(e.to_string()))?;
    if !phonenumber::is_valid(&n) {
        return Err(NumberError::Invalid);
    }
    let kind = match n.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile => "mobile",
        Type::FixedLine => "fixed_line",
        Type::FixedLineOrMobile => "fixed_line_or_mobile",
        Type::TollFree => "toll_free",
        Type::PremiumRate => "premium_rate",
        Type::Voip => "voip",
        _ => "other",
    };
    Ok(Normalized {
        e164: n.format().mode(Mode::E164).to_string(),
        country_code: n.code().value(),
        kind,
    })
}

const GEO_ZH_86: &str = include_str!(concat!(
    env!("OUTCALL_PHONENUMBER_ASSETS"),
    "/geocoding/zh/86.txt"
));
const CARRIER_ZH_86: &str = include_str!(concat!(
    env!("OUTCALL_PHONENUMBER_ASSETS"),
    "/carrier/zh/86.txt"
));

mod en {
    include!(concat!(env!("OUT_DIR"), "/libphonenumber_en.rs"));
}

type Table = HashMap<&'static str, &'static str>;
type Cache = std::sync::Mutex<HashMap<&'static str, &'static Table>>;
static GEO_CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Default::default);
static CARRIER_CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Default::default);

/// The parsed English geocoding or carrier table of a number's country code, built on first
/// use and kept for the life of the process.
fn country_table(
    which: &'static [(&'static str, &'static str)],
    cache: &'static Cache,
    digits: &str,
) -> Option<&'static Table> {
    let (cc, text) = (1..=3).find_map(|n| {
        let cc = digits.get(..n)?;
        which.iter().find(|(c, _)| *c == cc).copied()
    })?;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    Some(
        *c.entry(cc)
            .or_insert_with(|| Box::leak(Box::new(table(text)))),
    )
}

fn table(text: &'static str) -> HashMap<&'static str, &'static str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('|'))
        .collect()
}

fn longest<'a>(map: &HashMap<&'static str, &'a str>, digits: &str) -> Option<(&'a str, usize)> {
    (1..=digits.len().min(12))
        .rev()
        .find_map(|n| map.get(&digits[..n]).map(|v| (*v, n)))
}

fn geo() -> &'static HashMap<&'static str, &'static str> {
    static G: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    G.get_or_init(|| table(GEO_ZH_86))
}

fn carriers() -> &'static HashMap<&'static str, &'static str> {
    static C: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    C.get_or_init(|| table(CARRIER_ZH_86))
}

fn carrier_from_name(name: &str) -> Carrier {
    match name {
        n if n.contains("移动") => Carrier::ChinaMobile,
        n if n.contains("联通") => Carrier::ChinaUnicom,
        n if n.contains("电信") => Carrier::ChinaTelecom,
        n if n.contains("广电") => Carrier::ChinaBroadnet,
        _ => Carrier::Unknown,
    }
}

/// Splits `广东省深圳市` into (`广东省`, `深圳市`); a municipality is its own province.
fn split_place(place: &str) -> (String, String) {
    for mark in ["自治区", "省"] {
        if let Some(i) = place.find(mark) {
            let end = i + mark.len();
            let city = &place[end..];
            return (
                place[..end].to_string(),
                if city.is_empty() {
                    place[..end].to_string()
                } else {
                    city.to_string()
                },
            );
        }
    }
    (place.to_string(), place.to_string())
}

/// One source of attribution.
#[derive(Debug)]
pub enum Source {
    /// A `phone.dat` file (Chinese mobiles).
    PhoneDat(PhoneDat),
    /// libphonenumber's geocoding and carrier files (landlines, 19x segments, other countries).
    LibPhoneNumber,
}

/// The attribution chain: sources tried in order, the first that knows the number answers.
#[derive(Debug, Default)]
pub struct Attributor {
    sources: Vec<Source>,
}

impl Attributor {
    /// `phone.dat` first when given, then libphonenumber.
    pub fn new(phone_dat: Option<PhoneDat>) -> Self {
        let mut sources: Vec<Source> = phone_dat.into_iter().map(Source::PhoneDat).collect();
        sources.push(Source::LibPhoneNumber);
        Attributor { sources }
    }

    /// Sources in the given order.
    pub fn chain(sources: Vec<Source>) -> Self {
        Attributor { sources }
    }

    /// Other countries: libphonenumber's English place names (`New York, NY`).
    fn other_country(digits: &str) -> Option<Attribution> {
        let place = country_table(en::GEO_EN, &GEO_CACHE, digits).and_then(|t| longest(t, digits));
        let carrier =
            country_table(en::CARRIER_EN, &CARRIER_CACHE, digits).and_then(|t| longest(t, digits));
        if place.is_none() && carrier.is_none() {
            return None;
        }
        let place = place.map(|(p, _)| p).unwrap_or("");
        let (city, province) = match place.rsplit_once(", ") {
            Some((c, p)) => (c.to_string(), p.to_string()),
            None => (place.to_string(), place.to_string()),
        };
        Some(Attribution {
            province,
            city,
            zip: String::new(),
            area_code: String::new(),
            carrier: Carrier::Unknown,
            source: "libphonenumber",
        })
    }

    /// Attribution of an E.164 number; `None` when no source knows it.
    pub fn lookup(&self, e164: &str) -> Option<Attribution> {
        self.sources.iter().find_map(|s| match s {
            Source::PhoneDat(d) => d.lookup(e164),
            Source::LibPhoneNumber => Self::libphonenumber(e164),
        })
    }

    fn libphonenumber(e164: &str) -> Option<Attribution> {
        let digits = e164.strip_prefix('+')?;
        if !digits.starts_with("86") {
            return Self::other_country(digits);
        }
        let place = longest(geo(), digits);
        let carrier = longest(carriers(), digits).map(|(c, _)| carrier_from_name(c));
        if place.is_none() && carrier.is_none() {
            return None;
        }
        let (province, city) = place.map(|(p, _)| split_place(p)).unwrap_or_default();
        // Landlines carry their area code right after the country code.
        let national = &digits[2..];
        let area_code = match place {
            Some((_, len)) if !national.starts_with('1') => format!("0{}", &digits[2..len]),
            _ => String::new(),
        };
        Some(Attribution {
            province,
            city,
            zip: String::new(),
            area_code,
            carrier: carrier.unwrap_or(Carrier::Unknown),
            source: "libphonenumber",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn normalisation_table() {
        let good = [
            ("13812345678", "+8613812345678", "mobile"),
            ("+86 138-1234-5678", "+8613812345678", "mobile"),
            ("008613812345678", "+8613812345678", "mobile"),
            ("0755-12345678", "+8675512345678", "fixed_line"),
            ("010 8888 8888", "+861088888888", "fixed_line"),
            ("+1 212-555-0100", "+12125550100", "fixed_line_or_mobile"),
            ("19912345678", "+8619912345678", "mobile"),
        ];
        for (raw, e164, kind) in good {
            let n = normalize(raw, "CN").unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!((n.e164.as_str(), n.kind), (e164, kind), "{raw}");
        }
        assert_eq!(normalize("", "CN").unwrap_err(), NumberError::Empty);
        assert!(matches!(
            normalize("hello", "CN"),
            Err(NumberError::Unparsable(_))
        ));
        assert_eq!(
            normalize("1381234", "CN").unwrap_err(),
            NumberError::Invalid
        );
        assert_eq!(
            normalize("12345678901", "CN").unwrap_err(),
            NumberError::Invalid
        );
        assert_eq!(
            normalize("+86 138 1234", "CN").unwrap_err(),
            NumberError::Invalid
        );
    }

    fn with_phone_dat() -> Attributor {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/phone.dat");
        Attributor::new(Some(PhoneDat::open(&p).unwrap()))
    }

    #[test]
    fn chain_prefers_phone_dat_for_mobiles() {
        let a = with_phone_dat().lookup("+8613800138000").unwrap();
        assert_eq!(
            (a.city.as_str(), a.carrier, a.source),
            ("北京", Carrier::ChinaMobile, "phone.dat")
        );
    }

    #[test]
    fn libphonenumber_answers_landlines_and_the_fallback() {
        let chain = with_phone_dat();
        let sz = chain.lookup("+8675512345678").unwrap();
        assert_eq!(sz.source, "libphonenumber");
        assert_eq!(
            (sz.province.as_str(), sz.city.as_str()),
            ("广东省", "深圳市")
        );
        assert_eq!(sz.area_code, "0755");
        let bj = chain.lookup("+861088888888").unwrap();
        assert_eq!(bj.city, "北京市");
        // Without phone.dat, a 19x mobile is still attributed to its carrier.
        let bare = Attributor::new(None);
        // The chain's order is the operator's: libphonenumber first answers 138 itself.
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/phone.dat");
        let reversed = Attributor::chain(vec![
            Source::LibPhoneNumber,
            Source::PhoneDat(PhoneDat::open(&p).unwrap()),
        ]);
        assert_eq!(
            reversed.lookup("+8613800138000").unwrap().source,
            "libphonenumber"
        );
        assert!(Attributor::chain(vec![]).lookup("+8613800138000").is_none());
        let m = bare.lookup("+8619912345678").unwrap();
        assert_eq!(
            (m.carrier, m.source),
            (Carrier::ChinaTelecom, "libphonenumber")
        );
        // Other countries: libphonenumber's English place names.
        let ny = bare.lookup("+12125550100").unwrap();
        assert_eq!((ny.city.as_str(), ny.province.as_str()), ("New York", "NY"));
        let london = bare.lookup("+442079460000").unwrap();
        assert_eq!(london.city, "London");
        assert_eq!(bare.lookup("+99912345"), None);
    }
}
