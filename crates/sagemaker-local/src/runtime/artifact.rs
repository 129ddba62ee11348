//! Finds and loads a model artifact: `file://` paths and `s3://bucket/key`, mapped to
//! `{data dir}/s3/bucket/key`. The artifact is a `model.tar.gz` holding `xgboost-model`
//! (what SageMaker's XGBoost container loads) or a bare XGBoost JSON file.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// The local file behind a ModelDataUrl.
pub fn resolve(data_dir: &Path, url: &str) -> Result<PathBuf, String> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(PathBuf::from(path))
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url}: no object key"))?;
        if bucket.is_empty() || key.is_empty() || key.split('/').any(|part| part == "..") {
            return Err(format!("{url}: not a valid S3 object URL"));
        }
        Ok(data_dir.join("s3").join(bucket).join(key))
    } else {
        Err(format!(
            "{url}: only s3:// and file:// model data URLs are supported"
        ))
    }
}

/// Reads the XGBoost JSON document out of the artifact at `path`.
pub fn read_model_json(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read model artifact {}: {e}", path.display()))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: not a tar.gz: {e}", path.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}: corrupt tar.gz: {e}", path.display()))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = name.rsplit('/').next().unwrap_or_default().to_owned();
        if file == "xgboost-model" || file == "xgboost-model.json" {
            let mut out = Vec::new();
            entry
                .read_to_end(&mut out)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(out);
        }
        names.push(name);
    }
    Err(format!(
        "{}: no xgboost-model in the archive (found {names:?})",
        path.display()
    ))
}

/// Writes `model.tar.gz` holding `xgboost-model`, as SageMaker training jobs do.
pub fn write_tar_gz(path: &Path, model_json: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path)?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(model_json.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "xgboost-model", model_json)?;
    builder.into_inner()?.finish()?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_map_under_the_data_dir() {
        let dir = Path::new("/data");
        assert_eq!(
            resolve(dir, "s3://b/models/m.tar.gz").unwrap(),
            PathBuf::from("/data/s3/b/models/m.tar.gz")
        );
        assert_eq!(
            resolve(dir, "file:///tmp/m.json").unwrap(),
            PathBuf::from("/tmp/m.json")
        );
        assert!(resolve(dir, "s3://b/../../etc/passwd").is_err());
        assert!(resolve(dir, "https://x/y").is_err());
        assert!(resolve(dir, "s3://bucket-only").is_err());
    }

    #[test]
    fn tar_gz_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/model.tar.gz");
        write_tar_gz(&path, b"{\"x\":1}").unwrap();
        assert_eq!(read_model_json(&path).unwrap(), b"{\"x\":1}");
        std::fs::write(dir.path().join("bare.json"), b"{}").unwrap();
        assert_eq!(
            read_model_json(&dir.path().join("bare.json")).unwrap(),
            b"{}"
        );
        assert!(read_model_json(&dir.path().join("missing")).is_err());
    }
}
