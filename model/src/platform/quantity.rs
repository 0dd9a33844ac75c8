//! Kubernetes resource quantities, as the API server reads them (k8s.io/apimachinery
//! `resource.Quantity`): a decimal number with an optional suffix, binary (`Ki Mi Gi Ti`) or
//! decimal (`m k M G T`), or an exponent (`1e9`). CPU is counted in millicores, memory in bytes.

use std::fmt;
use std::ops::{Add, Sub};

/// CPU and memory, as a pod requests them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Millicores (`1` CPU = 1000).
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

impl Add for Requests {
    type Output = Requests;
    fn add(self, o: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
        }
    }
}

impl Sub for Requests {
    type Output = Requests;
    /// Saturating: room is never negative.
    fn sub(self, o: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
        }
    }
}

impl Requests {
    /// `self` times `n` (replicas).
    pub fn times(self, n: u64) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis * n,
            memory_bytes: self.memory_bytes * n,
        }
    }

    /// Both CPU and memory of `self` are at most `room`'s.
    pub fn fits_in(self, room: Requests) -> bool {
        self.cpu_millis <= room.cpu_millis && self.memory_bytes <= room.memory_bytes
    }
}

impl fmt::Display for Requests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPU, {}",
            cpu(self.cpu_millis),
            memory(self.memory_bytes)
        )
    }
}

/// Millicores as people write them: `250m`, `2`, `1.5`.
pub fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else if millis >= 1000 {
        format!("{:.2}", millis as f64 / 1000.0)
            .trim_end_matches('0')
            .to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes in MiB (or GiB from 10 GiB up), rounded up.
pub fn memory(bytes: u64) -> String {
    const MI: u64 = 1 << 20;
    let mib = bytes.div_ceil(MI);
    if mib >= 10 * 1024 {
        format!("{:.1}Gi", mib as f64 / 1024.0)
    } else {
        format!("{mib}Mi")
    }
}

/// Splits `text` into its number and suffix, or says what is wrong.
fn split(text: &str) -> Result<(f64, &str), String> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(end);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a Kubernetes quantity (e.g. 250m, 512Mi, 1Gi)"))?;
    if value < 0.0 || !value.is_finite() {
        return Err(format!("{text:?} is negative"));
    }
    Ok((value, suffix))
}

fn multiplier(suffix: &str, text: &str) -> Result<f64, String> {
    Ok(match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..]
                .parse()
                .map_err(|_| format!("{text:?}: bad exponent {s:?}"))?;
            10f64.powi(exp)
        }
        other => {
            return Err(format!(
                "{text:?}: unknown suffix {other:?} (m, k, M, G, T, Ki, Mi, Gi, Ti)"
            ));
        }
    })
}

/// A CPU quantity in millicores, rounded up (`100m` → 100, `0.5` → 500, `2` → 2000).
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let (value, suffix) = split(text)?;
    Ok((value * multiplier(suffix, text)? * 1000.0).ceil() as u64)
}

/// A memory quantity in bytes, rounded up (`512Mi`, `2048M`, `1Gi`, `1e9`).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let (value, suffix) = split(text)?;
    if suffix == "m" {
        return Err(format!(
            "{text:?}: millibytes are not a memory size (did you mean Mi?)"
        ));
    }
    Ok((value * multiplier(suffix, text)?).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.25"), Ok(1250));
        assert!(
            parse_cpu("lots")
                .unwrap_err()
                .contains("not a Kubernetes quantity")
        );
        assert!(parse_cpu("5x").unwrap_err().contains("unknown suffix"));
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("2048M"), Ok(2_048_000_000));
        assert_eq!(parse_memory("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_memory("128974848"), Ok(128_974_848));
        assert!(parse_memory("64m").unwrap_err().contains("did you mean Mi"));
    }

    #[test]
    fn shown_as_people_write_them() {
        assert_eq!(cpu(250), "250m");
        assert_eq!(cpu(2000), "2");
        assert_eq!(cpu(1500), "1.5");
        assert_eq!(memory(64 << 20), "64Mi");
        assert_eq!(memory(2_048_000_000), "1954Mi");
        assert_eq!(memory(12 << 30), "12.0Gi");
    }
}
