//! The pages, by resource, and the embedded stylesheet and script.

pub mod agents;
pub mod jobs;
pub mod queues;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Rows per page of a listing.
pub const PAGE_SIZE: usize = 50;

/// `GET /ui/assets/<file>`: the stylesheet and the script, embedded.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "style.css" => (include_str!("../../assets/style.css"), "text/css; charset=utf-8"),
        "app.js" => (include_str!("../../assets/app.js"), "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "Not found\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// One page (1-based `page`) of `items`, and the pager's numbers.
pub fn paginate<T>(items: Vec<T>, page: usize) -> (Vec<T>, Value) {
    let pages = items.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let slice: Vec<T> = items.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
    let paging = json!({
        "page": page, "pages": pages,
        "prev": (page > 1).then_some(page - 1), "next": (page < pages).then_some(page + 1),
    });
    (slice, paging)
}

/// `key=value&…` of the non-empty filters, for links that keep them (ends with `&` or `?`).
pub fn query_base(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() { format!("{path}?") } else { format!("{path}?{q}&") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_clamp_and_link() {
        let (rows, paging) = paginate((0..120).collect::<Vec<_>>(), 3);
        assert_eq!(rows, (100..120).collect::<Vec<_>>());
        assert_eq!(paging["pages"], 3);
        assert_eq!(paging["next"], Value::Null);
        assert_eq!(paging["prev"], 2);
        let (rows, paging) = paginate(Vec::<u8>::new(), 9);
        assert!(rows.is_empty());
        assert_eq!(paging["page"], 1);
        assert_eq!(query_base("/jobs", &[("queue", "a b"), ("state", "")]), "/jobs?queue=a+b&");
        assert_eq!(query_base("/jobs", &[]), "/jobs?");
    }
}
