//! serde forms for the compiled types that are not plain data: durations
//! and regular expressions. `/config_dump` and the control plane's push use
//! the same encoding, so what a proxy is sent reads like what it dumps.

/// A duration as `250ms` (whole milliseconds) or, when finer, exact
/// nanoseconds (`1500ns`).
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() % 1_000_000 == 0 {
            s.collect_str(&format_args!("{}ms", d.as_millis()))
        } else {
            s.collect_str(&format_args!("{}ns", d.as_nanos()))
        }
    }

    pub(crate) fn parse(v: &str) -> Option<Duration> {
        if let Some(ns) = v.strip_suffix("ns") {
            let ns: u128 = ns.parse().ok()?;
            let secs = u64::try_from(ns / 1_000_000_000).ok()?;
            let nanos = u32::try_from(ns % 1_000_000_000).ok()?;
            Some(Duration::new(secs, nanos))
        } else {
            v.strip_suffix("ms")?
                .parse()
                .ok()
                .map(Duration::from_millis)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = String::deserialize(d)?;
        parse(&v).ok_or_else(|| D::Error::custom(format!("{v:?} is not a duration (Nms or Nns)")))
    }
}

pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(v) => super::duration::parse(&v)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{v:?} is not a duration (Nms or Nns)"))),
        }
    }
}

/// A regular expression as its source text, compiled again when read.
pub(crate) mod regex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(r: &::regex::Regex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<::regex::Regex, D::Error> {
        let v = String::deserialize(d)?;
        ::regex::Regex::new(&v).map_err(D::Error::custom)
    }
}

/// A rewrite's regex and replacement, as a pair of strings.
pub(crate) mod opt_regex_rewrite {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(
        r: &Option<(::regex::Regex, String)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        r.as_ref().map(|(re, to)| (re.as_str(), to)).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(::regex::Regex, String)>, D::Error> {
        match Option::<(String, String)>::deserialize(d)? {
            None => Ok(None),
            Some((re, to)) => Ok(Some((
                ::regex::Regex::new(&re).map_err(D::Error::custom)?,
                to,
            ))),
        }
    }
}
