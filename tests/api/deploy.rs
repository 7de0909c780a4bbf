//! `deploy/` stays true to the code: its configs load, its manifests have the shape Kubernetes
//! and Compose require and use the probes, ports and settings the server has, and the image's
//! HEALTHCHECK command works. (No cluster or Docker daemon here: a structural check, as
//! kubeconform would do for the fields that matter.)

use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey::config::Config;
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::helpers::{Backend, spawn_app_with};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("no string at {path:?} in {value:?}"))
}

#[test]
fn the_shipped_configs_load() {
    for path in ["kubernetes/latchkey.toml", "compose/latchkey.toml"] {
        let text = std::fs::read_to_string(deploy(path)).unwrap();
        let config = Config::parse(&text, |_| None)
            .unwrap_or_else(|e| panic!("{path}: {}", e.problems.join("; ")));
        assert!(!config.keys.is_empty(), "{path}");
        // OpenID Connect relying parties expect RS256 ID tokens whatever signs access tokens.
        assert!(
            config
                .keys
                .iter()
                .any(|k| k.signs_id_tokens && k.alg == latchkey::config::Alg::RS256 && !k.revoked),
            "{path}: no RS256 key signs ID tokens"
        );
        assert_eq!(config.listen.port(), 8080, "{path}");
        // Shipped configs keep OWASP's argon2 cost.
        assert_eq!(config.passwords.memory_kib, 19 * 1024, "{path}");
    }
    let k8s = Config::parse(
        &std::fs::read_to_string(deploy("kubernetes/latchkey.toml")).unwrap(),
        |_| None,
    )
    .unwrap();
    assert!(k8s.issuer.starts_with("https://"));
    assert_eq!(k8s.metrics_listen.unwrap().port(), 9100);
    assert!(k8s.shutdown.delay.as_secs() + k8s.shutdown.drain_timeout.as_secs() < 30);
}

#[test]
fn the_kubernetes_manifests_are_well_formed_and_hardened() {
    let kustomization = &yaml_documents("kubernetes/kustomization.yaml")[0];
    assert_eq!(str_at(kustomization, &["kind"]), "Kustomization");
    let mut kinds = Vec::new();
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let file = resource.as_str().unwrap();
        for doc in yaml_documents(&format!("kubernetes/{file}")) {
            assert!(
                str_at(&doc, &["apiVersion"]).contains('v'),
                "{file}: apiVersion"
            );
            assert!(!str_at(&doc, &["metadata", "name"]).is_empty(), "{file}");
            kinds.push((str_at(&doc, &["kind"]).to_owned(), doc));
        }
    }
    let kind = |k: &str| {
        kinds
            .iter()
            .find(|(kind, _)| kind == k)
            .map(|(_, doc)| doc)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let deployment = kind("Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(security["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    // The probes ask the server's own probe routes.
    let routes = latchkey::startup::ROUTE_PATTERNS;
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let asked = str_at(container, &[probe, "httpGet", "path"]);
        assert_eq!(asked, path);
        assert!(routes.contains(&asked));
    }
    let resources = &container["resources"];
    for field in [
        ["requests", "memory"],
        ["requests", "cpu"],
        ["limits", "memory"],
    ] {
        assert!(
            resources[field[0]][field[1]].as_str().is_some(),
            "{field:?}"
        );
    }
    // Config and keys are mounted as directories (updates reach running pods), read-only.
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        assert_eq!(mount["readOnly"], Value::Bool(true));
        assert!(mount.get("subPath").is_none());
    }
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "latchkey-config")
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "latchkey-keys")
    );
    // The grace period outlasts the configured drain.
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 30);
    let pdb = kind("PodDisruptionBudget");
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() >= 1);
    let service = kind("Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    // The ConfigMap is generated from the config the test above loads.
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(str_at(generated, &["name"]), "latchkey-config");
    assert_eq!(generated["files"][0].as_str(), Some("latchkey.toml"));
}

#[test]
fn the_compose_file_runs_two_instances_on_persistent_redis_behind_a_balancer() {
    let compose = &yaml_documents("compose.yaml")[0];
    let services = compose["services"].as_mapping().unwrap();
    let instances: Vec<&Value> = services
        .iter()
        .filter(|(name, _)| name.as_str().unwrap().starts_with("latchkey-"))
        .map(|(_, service)| service)
        .collect();
    assert_eq!(instances.len(), 2);
    for instance in instances {
        let volumes: Vec<&str> = instance["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            volumes
                .iter()
                .any(|v| v.contains("latchkey.toml") && v.ends_with(":ro"))
        );
        assert!(
            volumes
                .iter()
                .any(|v| v.contains("keys") && v.ends_with(":ro"))
        );
        assert_eq!(instance["read_only"], Value::Bool(true));
    }
    let redis = &compose["services"]["redis"]["command"];
    let command: Vec<&str> = redis
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(command.windows(2).any(|w| w == ["--appendonly", "yes"]));
    assert!(services.contains_key("nginx"));
    let nginx = std::fs::read_to_string(deploy("compose/nginx.conf")).unwrap();
    assert!(nginx.contains("server latchkey-1:8080") && nginx.contains("server latchkey-2:8080"));
}

#[test]
fn the_dockerfile_builds_locked_runs_unprivileged_and_checks_health_with_the_binary() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("\"healthcheck\", \"http://127.0.0.1:8080/healthz\""));
    // No config or key is copied into the image.
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY")) {
        assert!(!line.contains(".toml") && !line.contains(".pem"), "{line}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/latchkey.json")).unwrap())
            .unwrap();
    // Every series the dashboard plots is one the server exposes.
    let metrics = latchkey::metrics::Metrics::new();
    // One sample in every family, so each is exposed.
    metrics.request("/healthz", 200, 0.001);
    metrics.issued("password", "latchkey");
    metrics.refresh(latchkey::metrics::RefreshOutcome::Rotated);
    metrics.revoked(latchkey::metrics::RevokeCause::Logout, 1);
    metrics.login(latchkey::metrics::LoginOutcome::Success);
    metrics.store().observe("rotate", 0.001, true);
    metrics.hashing().wait.0.observe(0.001);
    let exposed = metrics
        .render(&test_snapshot(), 0)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect::<Vec<_>>();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                exposed.iter().any(|m| expr.contains(m.as_str())),
                "{expr} plots no exposed metric"
            );
        }
    }
}

fn test_snapshot() -> latchkey::state::Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::base_config(dir.path(), "sqlite://x.db");
    let config = Config::parse(&config.text, |_| None).unwrap();
    let keys = latchkey::keys::KeyRing::load(&config).unwrap();
    latchkey::state::Snapshot::new(config, keys)
}

#[tokio::test]
async fn the_healthcheck_command_answers_for_the_server() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    // Off the runtime's thread: the server answers on it meanwhile.
    let check = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_latchkey"))
                .args(["healthcheck", &url])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let healthy = check(app.url("/healthz")).await;
    assert!(healthy.status.success(), "{healthy:?}");
    let missing = check(app.url("/no/such/path")).await;
    assert!(!missing.status.success());
    let port = crate::helpers::free_port();
    let closed = check(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(!closed.status.success());
    assert!(String::from_utf8_lossy(&closed.stderr).contains("cannot connect"));
}
