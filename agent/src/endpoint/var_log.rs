//! `/logs/`: the node's log directory (/var/log) over the kubelet endpoint, as the kubelet
//! serves it (`kubectl get --raw /api/v1/nodes/N/proxy/logs/`): a directory answers with a
//! listing of links, a file with its bytes, streamed. Nothing outside the directory is reached:
//! `..` segments are refused.

use std::path::{Component, Path, PathBuf};

use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio_stream::StreamExt;

use super::read_only::{Reply, reply};

/// The file or directory `rest` (the path below `/logs/`) names inside `root`; `None` when it
/// climbs out with `..`.
fn resolve(root: &Path, rest: &str) -> Option<PathBuf> {
    let relative = Path::new(rest.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(root.join(relative))
}

/// Escapes text for HTML, as a listing's names need.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn listing(dir: &Path) -> std::io::Result<String> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    let mut page = String::from(
        "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
    );
    for name in names {
        let href: String = form_urlencoded::byte_serialize(name.as_bytes())
            .collect::<String>()
            .replace("%2F", "/")
            .replace('+', "%20");
        page.push_str(&format!("<a href=\"{href}\">{}</a>\n", html_escape(&name)));
    }
    page.push_str("</pre>\n");
    Ok(page)
}

/// Serves `below`, the request path after `/logs` (empty, or starting with `/`), from `root`.
pub async fn serve(root: &Path, below: &str) -> Reply {
    let rest = below.strip_prefix('/').unwrap_or(below);
    let Some(path) = resolve(root, rest) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "invalid URL path: \"..\" segments are not allowed",
        );
    };
    let metadata = match tokio::fs::metadata(&path).await {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return reply(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n");
        }
        Err(e) => return reply(StatusCode::FORBIDDEN, "text/plain", format!("{e}\n")),
    };
    if metadata.is_dir() {
        // Relative links in the listing need the trailing slash, as Go's file server insists.
        if !below.ends_with('/') {
            let name = match rest.rsplit('/').next() {
                Some(last) if !last.is_empty() => last,
                _ => "logs",
            };
            let mut moved = reply(StatusCode::MOVED_PERMANENTLY, "text/html", "");
            if let Ok(location) = format!("{name}/").parse() {
                moved
                    .headers_mut()
                    .insert(hyper::header::LOCATION, location);
            }
            return moved;
        }
        return match listing(&path).await {
            Ok(page) => reply(StatusCode::OK, "text/html; charset=utf-8", page),
            Err(e) => reply(StatusCode::FORBIDDEN, "text/plain", format!("{e}\n")),
        };
    }
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => return reply(StatusCode::FORBIDDEN, "text/plain", format!("{e}\n")),
    };
    let frames = tokio_util::io::ReaderStream::new(file).map(|chunk| chunk.map(Frame::data));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    if let Ok(value) = "text/plain; charset=utf-8".parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    if let Ok(value) = metadata.len().to_string().parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(reply: Reply) -> (StatusCode, String) {
        let status = reply.status();
        let bytes = reply.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn serves_listings_and_files_and_nothing_outside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("syslog"), "line one\n").unwrap();
        std::fs::create_dir(root.path().join("pods")).unwrap();
        std::fs::write(root.path().join("pods").join("a b.log"), "x").unwrap();

        let (status, page) = body(serve(root.path(), "/").await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<a href=\"pods/\">pods/</a>"), "{page}");
        assert!(page.contains("<a href=\"syslog\">syslog</a>"), "{page}");

        let (status, page) = body(serve(root.path(), "/pods/").await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<a href=\"a%20b.log\">a b.log</a>"), "{page}");

        let top = serve(root.path(), "").await;
        assert_eq!(top.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(top.headers()[hyper::header::LOCATION], "logs/");

        let moved = serve(root.path(), "/pods").await;
        assert_eq!(moved.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(moved.headers()[hyper::header::LOCATION], "pods/");

        assert_eq!(
            body(serve(root.path(), "/syslog").await).await,
            (StatusCode::OK, "line one\n".to_string())
        );
        assert_eq!(
            serve(root.path(), "/missing").await.status(),
            StatusCode::NOT_FOUND
        );
        let (status, text) = body(serve(root.path(), "/pods/../../etc/passwd").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains(".."), "{text}");
    }
}
