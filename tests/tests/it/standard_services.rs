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

#[tokio::test]
async fn reflection_v1alpha_is_served_for_older_tools() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let daemon = TestDaemon::start().await;
    let mut reflection = ServerReflectionClient::new(raw_channel(daemon.socket()).await);
    let requests = tokio_stream::iter(vec![ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]);
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
    assert!(
        names.iter().any(|n| n == "keyhaven.v1.Credentials"),
        "{names:?}"
    );
}

/// Python's stock grpcio-reflection client speaks v1alpha only.
#[test]
fn the_stock_python_reflection_client_lists_and_resolves_the_services() {
    let python = "python3";
    let probe = std::process::Command::new(python)
        .args([
            "-c",
            "import grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database",
        ])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        if std::env::var_os("KEYHAVEN_REQUIRE_OTHER_LANGUAGES").is_some() {
            panic!("python3 with grpcio and grpcio-reflection is required here: {probe:?}");
        }
        keyhaven_tests::skip(
            "the_stock_python_reflection_client_lists_and_resolves_the_services",
            "python3 with grpcio and grpcio-reflection is not installed",
        );
        return;
    }
    let env = keyhaven_tests::TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let script = r#"
import sys, grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool
channel = grpc.insecure_channel("unix://" + sys.argv[1])
db = ProtoReflectionDescriptorDatabase(channel)
services = db.get_services()
print("services:", " ".join(sorted(services)))
pool = DescriptorPool(db)
svc = pool.FindServiceByName("keyhaven.v1.Credentials")
print("methods:", " ".join(m.name for m in svc.methods))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, env.socket().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("keyhaven.v1.Credentials"), "{stdout}");
    assert!(stdout.contains("keyhaven.v1.Daemon"), "{stdout}");
    assert!(
        stdout.contains("Retrieve") && stdout.contains("Store"),
        "{stdout}"
    );
    drop(daemon);
}
