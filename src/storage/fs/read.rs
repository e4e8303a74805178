//! C1 read, C2/C3 abstract/overview, C4 download.
//!
//! Large files: read serializes the selected text straight to its JSON string form inside the
//! job, so the handler never holds a second decoded copy; download hands the file's one buffer
//! to the response as `Bytes` without copying.

use super::entry::{sidecar_text, ABSTRACT_FILE, OVERVIEW_FILE};
use super::{dir_not_found, file_not_found, is_a_directory, lossy_string, stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorageError, Version};

/// Read a whole file, translating "missing" and "is a directory" (the latter worded by `dir_message`).
fn read_file(
    storage: &dyn Storage,
    uri: &VikingUri,
    dir_message: impl Fn(&str) -> String,
) -> ServiceResult<Vec<u8>> {
    match storage.read(uri.store_path()) {
        Ok(bytes) => Ok(bytes),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            Err(file_not_found(uri))
        }
        Err(StorageError::IsADirectory(_)) => Err(is_a_directory(uri, dir_message(&uri.uri()))),
        Err(e) => Err(StorageFail(uri).map(e)),
    }
}

/// One piece of a file streamed in pieces: up to `len` bytes at `offset` of the version
/// `expected` (its `stat` when the stream began). The version is checked after the read, so a
/// piece that may come from a replacement is refused (409) and the stream ends short rather
/// than splicing two versions.
pub fn read_piece(
    storage: &dyn Storage,
    uri: &VikingUri,
    offset: u64,
    len: u64,
    expected: Option<&Version>,
) -> ServiceResult<Vec<u8>> {
    let replaced = || ServiceError::conflict(format!("{uri} changed while it was being read"));
    let piece = match storage.read_range(uri.store_path(), offset, len) {
        Ok(piece) => piece,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            return Err(replaced())
        }
        Err(e) => return Err(StorageFail(uri).map(e)),
    };
    match storage.stat(uri.store_path()) {
        Ok(Some(meta)) if meta.version.as_ref() == expected => Ok(piece),
        Ok(_) => Err(replaced()),
        Err(e) => Err(StorageFail(uri).map(e)),
    }
}

/// C1: lines `[offset, offset+limit)` of a file (`limit: None` = to the end) as text, already
/// JSON-encoded as a string literal (quotes and escapes included).
pub fn read_lines(
    storage: &dyn Storage,
    uri: &VikingUri,
    offset: usize,
    limit: Option<usize>,
) -> ServiceResult<Vec<u8>> {
    let bytes = read_file(storage, uri, |u| {
        format!(
            "Directory URI is not readable as a file: {u}. List it first, then read a file URI."
        )
    })?;
    let text = lossy_string(bytes);
    let selected = select_lines(&text, offset, limit);
    serde_json::to_vec(selected).map_err(ServiceError::internal)
}

/// Lines `[offset, offset+limit)`, each with its terminator, as one slice of `text`.
pub fn select_lines(text: &str, offset: usize, limit: Option<usize>) -> &str {
    if offset == 0 && limit.is_none() {
        return text;
    }
    let mut start = text.len();
    let mut end = text.len();
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == offset {
            start = pos;
        }
        if let Some(l) = limit {
            if i == offset.saturating_add(l) {
                end = pos;
                break;
            }
        }
        pos += line.len();
    }
    if start > end {
        return "";
    }
    &text[start..end]
}

/// Which directory sidecar C2/C3 read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecar {
    Abstract,
    Overview,
}

/// C2/C3: a directory's abstract or overview body (a file URI uses its parent directory).
pub fn read_sidecar(
    storage: &dyn Storage,
    uri: &VikingUri,
    which: Sidecar,
) -> ServiceResult<String> {
    let meta = stat(storage, uri)?.ok_or_else(|| dir_not_found(uri))?;
    let dir = if meta.is_dir() {
        uri.clone()
    } else {
        uri.parent().ok_or_else(|| dir_not_found(uri))?
    };
    let file = match which {
        Sidecar::Abstract => ABSTRACT_FILE,
        Sidecar::Overview => OVERVIEW_FILE,
    };
    Ok(sidecar_text(storage, &dir, file))
}

/// C4: the raw bytes of a file.
pub fn download(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<Vec<u8>> {
    read_file(storage, uri, |u| {
        format!("Cannot read directory as file: {u}")
    })
}

#[cfg(test)]
mod tests {
    use super::select_lines;

    #[test]
    fn line_windows_keep_terminators() {
        let t = "a\nb\r\nc\nd";
        assert_eq!(select_lines(t, 0, None), t);
        assert_eq!(select_lines(t, 1, None), "b\r\nc\nd");
        assert_eq!(select_lines(t, 1, Some(2)), "b\r\nc\n");
        assert_eq!(select_lines(t, 3, Some(5)), "d");
        assert_eq!(select_lines(t, 4, None), "");
        assert_eq!(select_lines(t, 9, Some(1)), "");
        assert_eq!(select_lines(t, 0, Some(0)), "");
        assert_eq!(select_lines("", 0, Some(3)), "");
    }
}
