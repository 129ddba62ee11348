//! Finds and loads a model artifact: `s3://bucket/key`, mapped to `{data dir}/s3/bucket/key`,
//! and `file://` paths under the roots the server is told (`--file-roots`; none by default).
//! The artifact is a `model.tar.gz` holding `xgboost-model` (what SageMaker's XGBoost
//! container loads) or a bare XGBoost JSON file. Nothing outside those folders is read, and
//! neither the artifact nor what it decompresses to may exceed its cap.

use std::{
    io::Read,
    path::{Component, Path, PathBuf},
};

/// How large an artifact may be, and what it may decompress to.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// The largest artifact read (compressed, as stored).
    pub artifact_bytes: u64,
    /// The most it may decompress to (the tar stream, and the model JSON within it).
    pub model_bytes: u64,
}

impl Caps {
    /// 256 MiB stored, 1 GiB decompressed: far above any model here (the 300-tree, depth-10
    /// parity model is a few MB), far below what would take the server down.
    pub const DEFAULT: Caps = Caps {
        artifact_bytes: 256 << 20,
        model_bytes: 1 << 30,
    };
}

/// Whether `bucket` is a name S3 could have: 3-63 of `a-z 0-9 . -`, starting and ending with
/// a letter or digit (so never `.`, `..` or empty).
fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..")
}

/// The file behind an `s3://bucket/key` URL: always under `{data_dir}/s3/{bucket}/`. A key
/// with an empty, `.` or `..` segment (`s3://b//etc/passwd`, `s3://b/a/../../x`) is refused.
pub fn resolve_s3(data_dir: &Path, url: &str) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url}: not an s3:// URL"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("{url}: no object key"))?;
    if !valid_bucket(bucket) {
        return Err(format!("{url}: {bucket:?} is not a valid bucket name"));
    }
    if key.is_empty() || key.split('/').any(|part| matches!(part, "" | "." | "..")) {
        return Err(format!(
            "{url}: the object key must not be empty or hold empty, '.' or '..' segments"
        ));
    }
    Ok(data_dir.join("s3").join(bucket).join(key))
}

/// The local file behind a ModelDataUrl: `s3://` under the data dir, `file://` only under
/// one of `file_roots` (an absolute path without `..`).
pub fn resolve(data_dir: &Path, file_roots: &[PathBuf], url: &str) -> Result<PathBuf, String> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = Path::new(path);
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain {
            return Err(format!(
                "{url}: a file:// URL must be an absolute path without '.' or '..'"
            ));
        }
        if !file_roots.iter().any(|root| path.starts_with(root)) {
            return Err(format!(
                "{url}: file:// artifacts are read only under the folders sagemaker-local is given (--file-roots); upload it under s3:// instead"
            ));
        }
        Ok(path.to_owned())
    } else if url.starts_with("s3://") {
        resolve_s3(data_dir, url)
    } else {
        Err(format!(
            "{url}: only s3:// and file:// model data URLs are supported"
        ))
    }
}

/// Reads the XGBoost JSON document out of the artifact at `path`, within the caps.
pub fn read_model_json(path: &Path, caps: Caps) -> Result<Vec<u8>, String> {
    let (max_artifact_bytes, max_model_bytes) = (caps.artifact_bytes, caps.model_bytes);
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read model artifact {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read model artifact {}: {e}", path.display()))?
        .len();
    if size > max_artifact_bytes {
        return Err(format!(
            "{}: the artifact is {size} bytes; the most sagemaker-local loads is {max_artifact_bytes}",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_artifact_bytes)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read model artifact {}: {e}", path.display()))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let too_big = || {
        format!(
            "{}: the artifact decompresses to more than {max_model_bytes} bytes",
            path.display()
        )
    };
    // The whole decompressed stream is capped (and counted), so a gzip bomb ends at the cap.
    let read = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let stream = Counted {
        inner: flate2::read::GzDecoder::new(bytes.as_slice()).take(max_model_bytes + 1),
        read: std::rc::Rc::clone(&read),
    };
    let over = || read.get() > max_model_bytes;
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: not a tar.gz: {e}", path.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(_) if over() => return Err(too_big()),
            Err(e) => return Err(format!("{}: corrupt tar.gz: {e}", path.display())),
        };
        if entry.header().size().unwrap_or(0) > max_model_bytes {
            return Err(too_big());
        }
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = name.rsplit('/').next().unwrap_or_default().to_owned();
        if file == "xgboost-model" || file == "xgboost-model.json" {
            let mut out = Vec::new();
            let copied = entry.take(max_model_bytes + 1).read_to_end(&mut out);
            if over() || out.len() as u64 > max_model_bytes {
                return Err(too_big());
            }
            copied.map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(out);
        }
        names.push(name);
    }
    if over() {
        return Err(too_big());
    }
    Err(format!(
        "{}: no xgboost-model in the archive (found {names:?})",
        path.display()
    ))
}

/// A reader that counts what passes through it.
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
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
    fn urls_resolve_only_under_the_data_dir_and_the_given_roots() {
        let dir = Path::new("/data");
        let roots = [PathBuf::from("/models")];
        assert_eq!(
            resolve(dir, &roots, "s3://bkt/models/m.tar.gz").unwrap(),
            PathBuf::from("/data/s3/bkt/models/m.tar.gz")
        );
        assert_eq!(
            resolve(dir, &roots, "file:///models/m.json").unwrap(),
            PathBuf::from("/models/m.json")
        );
        for escape in [
            "s3://bkt/../../etc/passwd",
            "s3://bkt//etc/passwd",
            "s3://bkt/a/./b",
            "s3://../etc/passwd",
            "s3://./x/y",
            "s3://bkt/",
            "s3://bucket-only",
            "file:///tmp/m.json",
            "file:///models/../etc/passwd",
            "file://models/m.json",
            "https://x/y",
        ] {
            assert!(resolve(dir, &roots, escape).is_err(), "{escape}");
        }
    }

    #[test]
    fn tar_gz_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/model.tar.gz");
        write_tar_gz(&path, b"{\"x\":1}").unwrap();
        assert_eq!(read_model_json(&path, Caps::DEFAULT).unwrap(), b"{\"x\":1}");
        std::fs::write(dir.path().join("bare.json"), b"{}").unwrap();
        assert_eq!(
            read_model_json(&dir.path().join("bare.json"), Caps::DEFAULT).unwrap(),
            b"{}"
        );
        assert!(read_model_json(&dir.path().join("missing"), Caps::DEFAULT).is_err());
    }

    #[test]
    fn a_bomb_stops_at_the_caps() {
        let caps = Caps {
            artifact_bytes: 64 << 10,
            model_bytes: 1 << 20,
        };
        let dir = tempfile::tempdir().unwrap();
        // Entries each under the cap that add up to over it (a few KB compressed), and one
        // entry that says it is over the cap by itself.
        let bomb = |name: &str, sizes: &[usize]| {
            let path = dir.path().join(name);
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&path).unwrap(),
                flate2::Compression::best(),
            );
            let mut tar = tar::Builder::new(gz);
            for (i, &size) in sizes.iter().enumerate() {
                let mut header = tar::Header::new_gnu();
                header.set_size(size as u64);
                header.set_cksum();
                tar.append_data(
                    &mut header,
                    format!("padding-{i}"),
                    vec![0u8; size].as_slice(),
                )
                .unwrap();
            }
            tar.into_inner().unwrap().finish().unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() < caps.artifact_bytes);
            path
        };
        for path in [
            bomb("many.tar.gz", &[900 << 10; 4]),
            bomb("one.tar.gz", &[3 << 20]),
        ] {
            let e = read_model_json(&path, caps).unwrap_err();
            assert!(
                e.contains("decompresses to more than"),
                "{}: {e}",
                path.display()
            );
        }
        // A model file larger than the artifact cap is not read at all.
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 128 << 10]).unwrap();
        let e = read_model_json(&big, caps).unwrap_err();
        assert!(e.contains("the most sagemaker-local loads"), "{e}");
    }
}
