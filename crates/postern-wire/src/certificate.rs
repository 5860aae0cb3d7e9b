//! What the gateway reads from X.509 certificates, with a minimal DER walk (no general
//! parser needed): `tls-server-end-point` channel-binding data ([RFC 5929] §4.1) for
//! SCRAM-SHA-256-PLUS — the hash of the server certificate with the hash function of its
//! signature algorithm (MD5 and SHA-1 replaced by SHA-256), as PostgreSQL computes it —
//! and the subject's common name, which client-certificate login matches.
//! Certificate layout: [RFC 5280] §4.1.
//!
//! [RFC 5929]: https://www.rfc-editor.org/rfc/rfc5929#section-4.1
//! [RFC 5280]: https://www.rfc-editor.org/rfc/rfc5280#section-4.1

use sha2::{Digest, Sha256, Sha384, Sha512};

/// Reads one DER TLV: tag, contents, and the bytes after it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// The signatureAlgorithm OID (contents bytes) of an X.509 certificate.
fn signature_algorithm(cert_der: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, certificate, _) = tlv(cert_der)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = tlv(certificate)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = tlv(rest)? else {
        return None;
    };
    let (OID, oid, _) = tlv(algorithm)? else {
        return None;
    };
    Some(oid)
}

// 1.2.840.113549.1.1.{4,5,11,12,13}: md5/sha1/sha256/sha384/sha512 WithRSAEncryption.
const RSA_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
// 1.2.840.10045.4.1 (ecdsa-with-SHA1) and 1.2.840.10045.4.3.{2,3,4} (SHA256/384/512).
const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_SHA2_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];

/// The channel-binding data for a server certificate, or `None` when its signature
/// algorithm defines no hash here (Ed25519, RSASSA-PSS): PLUS is then not offered.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    enum Hash {
        Sha256,
        Sha384,
        Sha512,
    }
    let oid = signature_algorithm(cert_der)?;
    let hash = match (oid.split_last()?, oid) {
        (_, ECDSA_SHA1) => Hash::Sha256,
        ((&last, prefix), _) if prefix == RSA_PREFIX => match last {
            4 | 5 | 11 => Hash::Sha256,
            12 => Hash::Sha384,
            13 => Hash::Sha512,
            _ => return None,
        },
        ((&last, prefix), _) if prefix == ECDSA_SHA2_PREFIX => match last {
            2 => Hash::Sha256,
            3 => Hash::Sha384,
            4 => Hash::Sha512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match hash {
        Hash::Sha256 => Sha256::digest(cert_der).to_vec(),
        Hash::Sha384 => Sha384::digest(cert_der).to_vec(),
        Hash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

/// The tbsCertificate fields of a certificate, in order.
fn tbs_fields(cert_der: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (SEQUENCE, certificate, _) = tlv(cert_der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = tlv(certificate)? else {
        return None;
    };
    let mut fields = Vec::new();
    while !tbs.is_empty() {
        let (tag, contents, rest) = tlv(tbs)?;
        fields.push((tag, contents));
        tbs = rest;
    }
    Some(fields)
}

// 2.5.4.3: id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const SET: u8 = 0x31;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The subject's common name (the last CN if there are several), if it is text.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let fields = tbs_fields(cert_der)?;
    // version [0] is optional; then serial, signature, issuer, validity, subject.
    let skip = usize::from(fields.first()?.0 == EXPLICIT_VERSION);
    let &(SEQUENCE, mut names) = fields.get(skip + 4)? else {
        return None;
    };
    let mut common_name = None;
    while !names.is_empty() {
        let (SET, mut attributes, rest) = tlv(names)? else {
            return None;
        };
        names = rest;
        while !attributes.is_empty() {
            let (SEQUENCE, attribute, rest) = tlv(attributes)? else {
                return None;
            };
            attributes = rest;
            let (OID, oid, value) = tlv(attribute)? else {
                return None;
            };
            if oid == COMMON_NAME {
                let (_string_type, text, _) = tlv(value)?;
                common_name = Some(String::from_utf8(text.to_vec()).ok()?);
            }
        }
    }
    common_name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate skeleton with the given signature algorithm OID.
    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let tbs = [SEQUENCE, 3, 0x02, 0x01, 0x01];
        let mut alg = vec![OID, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut alg_seq = vec![SEQUENCE, alg.len() as u8];
        alg_seq.extend_from_slice(&alg);
        let sig = [0x03, 0x02, 0x00, 0xff];
        let body: Vec<u8> = [&tbs[..], &alg_seq, &sig].concat();
        let mut cert = vec![SEQUENCE, 0x81, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    #[test]
    fn reads_the_subject_common_name_of_real_certificates() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example ✓");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice-laptop");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_common_name(cert.der()).as_deref(),
            Some("alice-laptop")
        );
        // rcgen's default ECDSA P-256 certificate hashes with SHA-256.
        assert_eq!(
            tls_server_end_point(cert.der()).unwrap(),
            Sha256::digest(cert.der()).to_vec()
        );
        let without_cn = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        let mut without_cn = without_cn;
        without_cn.distinguished_name = rcgen::DistinguishedName::new();
        let cert = without_cn.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        let ecdsa256 = cert_with(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
        assert_eq!(
            tls_server_end_point(&ecdsa256).unwrap(),
            Sha256::digest(&ecdsa256).to_vec()
        );
        let rsa384 = cert_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]);
        assert_eq!(tls_server_end_point(&rsa384).unwrap().len(), 48);
        let rsa_sha1 = cert_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(
            tls_server_end_point(&rsa_sha1).unwrap().len(),
            32,
            "SHA-1 becomes SHA-256"
        );
        let ed25519 = cert_with(&[0x2b, 0x65, 0x70]);
        assert_eq!(tls_server_end_point(&ed25519), None);
        assert_eq!(tls_server_end_point(b"\x30\x84garbage"), None);
        assert_eq!(tls_server_end_point(&[]), None);
    }
}
