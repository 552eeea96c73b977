//! The simulated DUT's HTTP power controller:
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `POST /power/on` | power on (boot starts) | `200 {"state": "on"}` |
//! | `POST /power/off` | power off | `200 {"state": "off"}` |
//! | `POST /power/cycle` | off, then on | `200 {"state": "on"}` |
//! | `GET /power/status` | — | `200 {"state": "on" \| "off"}` |
//!
//! Other paths answer 404, other methods 405.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::machine::Machine;

pub(crate) async fn serve(listener: TcpListener, machine: Arc<Machine>) {
    loop {
        let Some((socket, _)) = machine.accept(&listener, "power").await else { return };
        let machine = machine.clone();
        machine.tasks.clone().spawn(async move {
            let service = service_fn(|request| {
                let machine = machine.clone();
                async move { Ok::<_, Infallible>(handle(&machine, request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(error = %e, "dutsim power connection failed");
                },
                _ = machine.token.cancelled() => {}
            }
        });
    }
}

fn handle(machine: &Arc<Machine>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(action) = request.uri().path().strip_prefix("/power/") else {
        return answer(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into());
    };
    let (wanted, allow) = if action == "status" { (Method::GET, "GET") } else { (Method::POST, "POST") };
    if !["on", "off", "cycle", "status"].contains(&action) {
        return answer(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into());
    }
    if request.method() != wanted {
        let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method not allowed"}"#.into());
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        return response;
    }
    match action {
        "on" => machine.power_on(),
        "off" => machine.power_off(),
        "cycle" => machine.power_cycle(),
        _ => {}
    }
    let state = if machine.is_powered() { "on" } else { "off" };
    tracing::debug!(action, state, "dutsim power request");
    answer(StatusCode::OK, format!(r#"{{"state":"{state}"}}"#))
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}
