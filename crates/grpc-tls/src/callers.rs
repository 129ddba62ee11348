//! Who may call which method, with mutual TLS: a caller is the subject common name (CN) of the
//! client certificate it presented (`scripts/dev-ca` and the AWS template issue one per
//! service, named after it), and each gRPC method admits only the callers its service lists.
//! A service states its own policy; `GRPC_TLS_ALLOW` replaces it method by method:
//! `Predict=gateway,batch-job;Log=gateway,predictor`. Without client certificates
//! (plaintext, or TLS without `GRPC_TLS_REQUIRE_CLIENT_CERT`) callers have no identity and
//! nothing is checked: there the network (security groups, compose networks) decides.

use std::collections::BTreeMap;

/// Method name (the last part of `/package.Service/Method`) -> the identities it admits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callers(BTreeMap<String, Vec<String>>);

impl Callers {
    /// A service's own policy: each of its methods and who may call it.
    pub fn new(policy: &[(&str, &[&str])]) -> Self {
        Callers(
            policy
                .iter()
                .map(|(method, who)| {
                    (
                        (*method).to_owned(),
                        who.iter().map(|w| (*w).to_owned()).collect(),
                    )
                })
                .collect(),
        )
    }

    /// `self` with the methods `GRPC_TLS_ALLOW` names replaced; a method the service does not
    /// serve is an error (a typo would otherwise silently allow nothing new).
    pub fn overridden(mut self, allow: Option<&str>) -> anyhow::Result<Self> {
        let Some(allow) = allow.filter(|a| !a.trim().is_empty()) else {
            return Ok(self);
        };
        for entry in allow.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (method, who) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("GRPC_TLS_ALLOW: {entry:?} is not METHOD=caller,caller")
            })?;
            let method = method.trim();
            let Some(slot) = self.0.get_mut(method) else {
                anyhow::bail!(
                    "GRPC_TLS_ALLOW: this service has no method {method:?} (it has {})",
                    self.0.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            *slot = who
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
        }
        Ok(self)
    }

    /// Whether `identity` may call the method at `path` (`/package.Service/Method`). A method
    /// the policy does not name admits nobody.
    pub fn admits(&self, path: &str, identity: &str) -> bool {
        let method = path.rsplit('/').next().unwrap_or_default();
        self.0
            .get(method)
            .is_some_and(|who| who.iter().any(|w| w == identity))
    }
}

/// The identity a client certificate (DER) carries: its subject's common name.
pub fn identity(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_admits_its_callers_and_the_environment_replaces_them() {
        let callers = Callers::new(&[
            ("Log", &["gateway", "predictor"]),
            ("ReportShadow", &["predictor"]),
        ]);
        assert!(callers.admits("/mlops.interaction.v1.InteractionLogger/Log", "gateway"));
        assert!(!callers.admits("/mlops.registry.v1.RegistryWatcher/ReportShadow", "gateway"));
        assert!(
            !callers.admits("/x.Y/Unlisted", "gateway"),
            "unlisted: nobody"
        );
        let replaced = callers
            .clone()
            .overridden(Some("ReportShadow=predictor, canary"))
            .unwrap();
        assert!(replaced.admits("/a.B/ReportShadow", "canary"));
        assert!(replaced.admits("/a.B/Log", "gateway"), "others unchanged");
        assert!(
            callers.clone().overridden(Some("Lgo=gateway")).is_err(),
            "a typo is an error"
        );
        assert!(callers.overridden(Some("Log")).is_err());
    }

    #[test]
    fn the_identity_is_the_subject_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "interaction-logger");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(identity(cert.der()).as_deref(), Some("interaction-logger"));
        assert_eq!(identity(b"not a certificate"), None);
    }
}
