//! The standard gRPC services probes and tools rely on: grpc.health.v1 and
//! server reflection, over the same peer-checked socket.

use keyhaven_tests::{TestDaemon, raw_channel};
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn health_reports_serving_then_not_serving_on_shutdown() {
    let daemon = TestDaemon::start().await;
    let mut health = HealthClient::new(raw_channel(daemon.socket()).await);
    for service in ["", "keyhaven.v1.Credentials"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // A watcher learns that the daemon is going away.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "keyhaven.v1.Credentials".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let stopping = tokio::spawn(daemon.stop());
    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    drop(health);
    stopping.await.unwrap();
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let daemon = TestDaemon::start().await;
    let mut reflection = ServerReflectionClient::new(raw_channel(daemon.socket()).await);
    let requests = tokio_stream::iter(vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "keyhaven.v1.Credentials".into(),
            )),
        },
    ]);
    let mut replies = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let listed = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "keyhaven.v1.Credentials",
        "keyhaven.v1.Daemon",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    let file = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(fd)) = file.message_response else {
        panic!("expected a file descriptor, got {file:?}");
    };
    let descriptor: prost_types::FileDescriptorProto =
        prost::Message::decode(fd.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(descriptor.package(), "keyhaven.v1");
    let methods: Vec<_> = descriptor
        .service
        .iter()
        .find(|s| s.name() == "Credentials")
        .unwrap()
        .method
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    for m in ["Store", "Retrieve", "Delete", "List"] {
        assert!(
            methods.iter().any(|n| n == m),
            "{m} missing from {methods:?}"
        );
    }
}
