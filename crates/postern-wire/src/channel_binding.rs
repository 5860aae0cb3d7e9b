//! `tls-server-end-point` channel-binding data ([RFC 5929] §4.1) for SCRAM-SHA-256-PLUS:
//! the hash of the server certificate, with the hash function of the certificate's
//! signature algorithm (MD5 and SHA-1 are replaced by SHA-256), as PostgreSQL computes it.
//!
//! [RFC 5929]: https://www.rfc-editor.org/rfc/rfc5929#section-4.1

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
