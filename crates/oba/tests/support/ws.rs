//! A graphql-transport-ws client for tests: the real protocol over a real WebSocket.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::TestSystem;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws` and sends `connection_init` with `payload`; the ack (or refusal) is
/// the first message to read.
pub async fn connect(app: &TestSystem, payload: Value) -> Socket {
    let url = format!("{}/graphql/ws", app.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket");
    let init = json!({ "type": "connection_init", "payload": payload });
    socket
        .send(Message::text(init.to_string()))
        .await
        .expect("init");
    socket
}

/// Connects signed in with `token` and waits for the ack.
pub async fn signed_in(app: &TestSystem, token: &str) -> Socket {
    let mut socket = connect(app, json!({ "Authorization": format!("Bearer {token}") })).await;
    let ack = next_json(&mut socket, Duration::from_secs(5))
        .await
        .expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

/// Starts operation `id` with `query`.
pub async fn subscribe(socket: &mut Socket, id: &str, query: &str) {
    let subscribe = json!({ "id": id, "type": "subscribe", "payload": { "query": query } });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
}

/// The next JSON message other than a ping, or None when none comes within `limit` or the
/// socket closes.
pub async fn next_json(socket: &mut Socket, limit: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(limit, socket.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).ok()?;
            if value["type"] != "ping" {
                return Some(value);
            }
        }
    }
}
