//! Part sizes of a multipart upload: parts big enough that S3's 10,000 suffice for the largest
//! backup expected, and few enough buffers of them to stay within bosund's memory budget. The
//! upload itself (compression, part buffers, S3) is the agent's (`bosun_agent::backup::upload`);
//! `mysql_backup`'s `max_size` is checked against this plan.

/// Most bytes of part buffers in memory at once.
pub const MEMORY_BUDGET: u64 = 24 << 20;
/// S3's limit on parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// Smallest part used: S3's minimum (except for the last part).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Double buffering: one part fills while the previous one uploads. More buffers (concurrent
/// uploads) measured too close to the 64 MiB process bound.
const MAX_BUFFERS: u64 = 2;

/// Part size and number of part buffers for an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    /// Bytes per part (the last may be smaller).
    pub part_size: usize,
    /// Part buffers that may exist at once (one filling, the rest uploading).
    pub buffers: usize,
}

impl PartPlan {
    /// The largest object this plan can upload.
    pub fn max_object_size(&self) -> u64 {
        self.part_size as u64 * MAX_PARTS
    }
}

/// Chooses parts so that an object of `max_size` bytes needs at most [`MAX_PARTS`] parts, and
/// part buffers fit in `budget`. Parts are whole MiB, at least [`MIN_PART_SIZE`].
pub fn plan_parts(max_size: u64, budget: u64) -> Result<PartPlan, String> {
    const MIB: u64 = 1 << 20;
    let needed = max_size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    let part = needed.max(MIN_PART_SIZE);
    let buffers = (budget / part).min(MAX_BUFFERS);
    if buffers < 2 {
        return Err(format!(
            "max_size {max_size} bytes needs parts of {} MiB, and two of them do not fit in the {} MiB memory budget: lower max_size to at most {} GiB",
            part / MIB,
            budget / MIB,
            budget / 2 / MIB * MAX_PARTS / 1024
        ));
    }
    Ok(PartPlan {
        part_size: usize::try_from(part).map_err(|e| e.to_string())?,
        buffers: usize::try_from(buffers).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_size_gets_minimum_parts_within_budget() {
        let p = plan_parts(40 << 30, MEMORY_BUDGET).unwrap();
        assert_eq!(p.part_size as u64, MIN_PART_SIZE);
        assert_eq!(p.buffers, 2);
        assert!(p.max_object_size() >= 40 << 30);
        assert!(p.part_size as u64 * p.buffers as u64 <= MEMORY_BUDGET);
    }

    #[test]
    fn parts_grow_so_10000_are_never_exceeded_and_memory_stays_in_budget() {
        for gib in [1u64, 50, 80, 100, 117] {
            let max = gib << 30;
            let p = plan_parts(max, MEMORY_BUDGET).unwrap();
            assert!(p.max_object_size() >= max, "{gib} GiB");
            assert!(
                p.part_size as u64 * p.buffers as u64 <= MEMORY_BUDGET,
                "{gib} GiB"
            );
            assert!(p.buffers >= 2);
            assert_eq!(p.part_size % (1 << 20), 0);
        }
    }

    #[test]
    fn a_max_size_beyond_the_budget_is_refused_with_the_limit() {
        let err = plan_parts(120 << 30, MEMORY_BUDGET).unwrap_err();
        assert!(err.contains("lower max_size to at most 117 GiB"), "{err}");
    }
}
