//! Reading the AMP artifact's `.npy` profiles: `{model}_{P3|G4}_{tp}.npy`
//! hold one float64 per layer, the forward time of one sample.

use amp_core::error::{AmpError, Result};
use amp_core::profile::ProfileEntry;

/// GPU type of an artifact file tag: P3 is p3.8xlarge's V100, G4 is
/// g4dn.12xlarge's T4.
pub fn gpu_of_tag(tag: &str) -> Option<&'static str> {
    match tag {
        "P3" => Some(amp_core::cluster::builtin::V100),
        "G4" => Some(amp_core::cluster::builtin::T4),
        _ => None,
    }
}

/// Parses a file name like `gpt2_P3_2.npy` into (model, gpu type, tp).
pub fn parse_file_name(name: &str) -> Option<(String, &'static str, usize)> {
    let stem = name.strip_suffix(".npy")?;
    let mut parts = stem.rsplitn(3, '_');
    let tp: usize = parts.next()?.parse().ok()?;
    let gpu = gpu_of_tag(parts.next()?)?;
    let model = parts.next()?.to_string();
    Some((model, gpu, tp))
}

/// Reads one `.npy` array of per-sample forward times.
pub fn read_npy(bytes: &[u8], origin: &str) -> Result<Vec<f64>> {
    check_npy_header(bytes, origin)?;
    let npy = npyz::NpyFile::new(bytes).map_err(|e| AmpError::parse(origin, e))?;
    let shape = npy.shape().to_vec();
    if shape.len() != 1 {
        return Err(AmpError::invalid(
            origin,
            format!("expected a 1-D array of per-layer times, found shape {shape:?}"),
        ));
    }
    // Checked before reading: the header's length must not allocate.
    if shape[0] > amp_core::limits::MAX_LAYERS as u64 {
        return Err(AmpError::invalid(
            origin,
            format!(
                "holds {} layer times, above the limit of {} layers",
                shape[0],
                amp_core::limits::MAX_LAYERS
            ),
        ));
    }
    let data: Vec<f64> = npy.into_vec().map_err(|e| AmpError::parse(origin, e))?;
    for (l, t) in data.iter().enumerate() {
        amp_core::limits::check_f64(*t, false, amp_core::limits::MAX_LAYER_TIME_S)
            .map_err(|m| AmpError::invalid(origin, format!("time [{l}] {m} (seconds)")))?;
    }
    Ok(data)
}

/// Checks the `.npy` header before the general parser sees it: the
/// per-layer time arrays amp reads have a short header with one flat
/// shape tuple, and a header nesting brackets deeply makes the parser
/// take exponential time.
fn check_npy_header(bytes: &[u8], origin: &str) -> Result<()> {
    let bad = |m: &str| {
        Err(AmpError::parse(
            origin,
            format!("not an .npy array of per-layer times: {m}"),
        ))
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return bad("no .npy magic");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return bad("unknown .npy version"),
    };
    if len > 4096 {
        return bad("header longer than 4096 bytes");
    }
    let Some(header) = bytes.get(start..start + len) else {
        return bad("truncated header");
    };
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    if count(b'[') > 0 || count(b'(') > 1 || count(b'{') > 1 {
        return bad("expected a 1-D float64 array (descr '<f8', shape (N,))");
    }
    Ok(())
}

pub fn entry_from_npy(name: &str, bytes: &[u8]) -> Result<(String, ProfileEntry)> {
    let (model, gpu, tp) = parse_file_name(name).ok_or_else(|| {
        AmpError::invalid(
            name,
            "not an AMP profile name; expected MODEL_{P3|G4}_{TP}.npy, e.g. gpt2_P3_1.npy",
        )
    })?;
    if !(1..=amp_core::limits::MAX_TP).contains(&tp) {
        return Err(AmpError::invalid(
            name,
            format!(
                "tensor-parallel degree {tp} in the file name must be 1..={}",
                amp_core::limits::MAX_TP
            ),
        ));
    }
    let forward_s = read_npy(bytes, name)?;
    Ok((
        model,
        ProfileEntry {
            gpu: gpu.to_string(),
            tp,
            micro_batch: None,
            forward_s,
            backward_s: None,
            optimizer_s: None,
            source: Some(name.to_string()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_parse() {
        assert_eq!(
            parse_file_name("gpt2_P3_2.npy"),
            Some(("gpt2".into(), "V100-16GB", 2))
        );
        assert_eq!(parse_file_name("gpt2_X9_2.npy"), None);
    }
}
