//! Just enough of a DER reader to take apart the X.509 certificates this crate issues and
//! verifies: subject attributes, subject public key, subject alternative names and subject key
//! identifier. Chain and signature checks are rustls-webpki's job; this only reads fields, so a
//! full ASN.1 library (and its dependency tree) is not needed.

use std::net::IpAddr;

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct DerError(&'static str);

/// One attribute of a distinguished name, such as CN or O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAttribute {
    /// The attribute type's OID, as its arcs (2.5.4.3 is CN).
    pub oid: Vec<u64>,
    /// The DER tag of the string value (PrintableString 0x13, UTF8String 0x0c, ...), kept so a
    /// name can be re-encoded byte for byte.
    pub tag: u8,
    /// The value, decoded as UTF-8 (lossily for the rare BMP/Teletex strings).
    pub value: String,
}

/// A subject alternative name this crate cares about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AltName {
    /// A dNSName.
    Dns(String),
    /// An iPAddress.
    Ip(IpAddr),
}

/// The fields of a certificate this crate reads.
#[derive(Debug, Clone)]
pub struct CertFields {
    /// Subject attributes in the order they appear.
    pub subject: Vec<NameAttribute>,
    /// The whole SubjectPublicKeyInfo, DER, to compare with a key file's public key.
    pub spki: Vec<u8>,
    /// Subject alternative names (DNS and IP only; other kinds are skipped).
    pub alt_names: Vec<AltName>,
    /// The subject key identifier extension's value, when present.
    pub subject_key_id: Option<Vec<u8>>,
}

/// OID 2.5.4.3, commonName.
pub const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
/// OID 2.5.4.10, organizationName.
pub const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
const TAG_SAN_DNS: u8 = 0x82;
const TAG_SAN_IP: u8 = 0x87;

/// A cursor over concatenated DER TLVs.
struct Reader<'a> {
    rest: &'a [u8],
}

/// One TLV: its tag, its contents, and the whole encoding (tag and length included).
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn next(&mut self) -> Result<Tlv<'a>, DerError> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(DerError("truncated tag"))?;
        // Multi-byte tags never occur in certificates.
        if tag & 0x1f == 0x1f {
            return Err(DerError("high tag numbers are not supported"));
        }
        let (&first, mut after_len) = after_tag
            .split_first()
            .ok_or(DerError("truncated length"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_len.len() < count {
                return Err(DerError("bad length"));
            }
            let mut len = 0usize;
            for &b in &after_len[..count] {
                len = (len << 8) | usize::from(b);
            }
            after_len = &after_len[count..];
            len
        };
        if after_len.len() < len {
            return Err(DerError("value runs past its container"));
        }
        let header = input.len() - after_len.len();
        let (contents, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok(Tlv {
            tag,
            contents,
            whole: &input[..header + len],
        })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let tlv = self.next()?;
        if tlv.tag != tag {
            return Err(DerError(what));
        }
        Ok(tlv)
    }
}

fn decode_oid(bytes: &[u8]) -> Result<Vec<u64>, DerError> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        value = value
            .checked_mul(128)
            .ok_or(DerError("OID arc too large"))?
            | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                // The first encoded arc packs the first two: 40 * a + b.
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == bytes.len() {
            return Err(DerError("truncated OID"));
        }
    }
    Ok(arcs)
}

fn decode_string(tag: u8, bytes: &[u8]) -> String {
    match tag {
        // BMPString is UTF-16BE.
        0x1e => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn parse_name(name: &[u8]) -> Result<Vec<NameAttribute>, DerError> {
    let mut attrs = Vec::new();
    let mut rdns = Reader::new(name);
    while !rdns.is_empty() {
        let set = rdns.expect(TAG_SET, "name RDN is not a SET")?;
        let mut atvs = Reader::new(set.contents);
        while !atvs.is_empty() {
            let atv = atvs.expect(TAG_SEQUENCE, "name attribute is not a SEQUENCE")?;
            let mut fields = Reader::new(atv.contents);
            let oid = fields.expect(TAG_OID, "name attribute type is not an OID")?;
            let value = fields.next()?;
            attrs.push(NameAttribute {
                oid: decode_oid(oid.contents)?,
                tag: value.tag,
                value: decode_string(value.tag, value.contents),
            });
        }
    }
    Ok(attrs)
}

fn parse_alt_names(value: &[u8]) -> Result<Vec<AltName>, DerError> {
    let mut names = Vec::new();
    let mut outer = Reader::new(value);
    let seq = outer.expect(TAG_SEQUENCE, "subjectAltName is not a SEQUENCE")?;
    let mut general = Reader::new(seq.contents);
    while !general.is_empty() {
        let name = general.next()?;
        match name.tag {
            TAG_SAN_DNS => names.push(AltName::Dns(
                String::from_utf8_lossy(name.contents).into_owned(),
            )),
            TAG_SAN_IP => match name.contents.len() {
                4 => {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(name.contents);
                    names.push(AltName::Ip(IpAddr::from(b)));
                }
                16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(name.contents);
                    names.push(AltName::Ip(IpAddr::from(b)));
                }
                _ => return Err(DerError("iPAddress SAN of odd length")),
            },
            _ => {}
        }
    }
    Ok(names)
}

/// Reads the fields this crate needs out of a DER certificate.
pub fn parse_certificate(der: &[u8]) -> Result<CertFields, DerError> {
    let mut top = Reader::new(der);
    let cert = top.expect(TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
    let mut cert_fields = Reader::new(cert.contents);
    let tbs = cert_fields.expect(TAG_SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut tbs = Reader::new(tbs.contents);
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.next()?;
    }
    tbs.next()?; // serialNumber
    tbs.expect(TAG_SEQUENCE, "signature algorithm is not a SEQUENCE")?;
    tbs.expect(TAG_SEQUENCE, "issuer is not a SEQUENCE")?;
    tbs.expect(TAG_SEQUENCE, "validity is not a SEQUENCE")?;
    let subject = tbs.expect(TAG_SEQUENCE, "subject is not a SEQUENCE")?;
    let spki = tbs.expect(TAG_SEQUENCE, "subjectPublicKeyInfo is not a SEQUENCE")?;
    let mut fields = CertFields {
        subject: parse_name(subject.contents)?,
        spki: spki.whole.to_vec(),
        alt_names: Vec::new(),
        subject_key_id: None,
    };
    while !tbs.is_empty() {
        let item = tbs.next()?;
        if item.tag != TAG_EXTENSIONS {
            continue; // issuerUniqueID / subjectUniqueID
        }
        let mut wrapper = Reader::new(item.contents);
        let list = wrapper.expect(TAG_SEQUENCE, "extensions are not a SEQUENCE")?;
        let mut exts = Reader::new(list.contents);
        while !exts.is_empty() {
            let ext = exts.expect(TAG_SEQUENCE, "extension is not a SEQUENCE")?;
            let mut parts = Reader::new(ext.contents);
            let oid = decode_oid(
                parts
                    .expect(TAG_OID, "extension id is not an OID")?
                    .contents,
            )?;
            if parts.peek_tag() == Some(TAG_BOOLEAN) {
                parts.next()?;
            }
            let value = parts.expect(TAG_OCTET_STRING, "extension value is not an OCTET STRING")?;
            if oid == OID_SUBJECT_ALT_NAME {
                fields.alt_names = parse_alt_names(value.contents)?;
            } else if oid == OID_SUBJECT_KEY_ID {
                let mut inner = Reader::new(value.contents);
                let id = inner.expect(
                    TAG_OCTET_STRING,
                    "subjectKeyIdentifier is not an OCTET STRING",
                )?;
                fields.subject_key_id = Some(id.contents.to_vec());
            }
        }
    }
    Ok(fields)
}

impl CertFields {
    /// The values of every subject attribute of the given type, in order.
    pub fn subject_values(&self, oid: &[u64]) -> Vec<String> {
        self.subject
            .iter()
            .filter(|a| a.oid == oid)
            .map(|a| a.value.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_rcgen_writes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["kubernetes".to_string(), "10.96.0.1".to_string()])
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubernetes-admin");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("::1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let fields = parse_certificate(cert.der()).unwrap();
        assert_eq!(
            fields.subject_values(OID_COMMON_NAME),
            vec!["kubernetes-admin"]
        );
        assert_eq!(
            fields.subject_values(OID_ORGANIZATION),
            vec!["system:masters"]
        );
        assert_eq!(
            fields.alt_names,
            vec![
                AltName::Dns("kubernetes".into()),
                AltName::Ip("10.96.0.1".parse().unwrap()),
                AltName::Ip("::1".parse().unwrap()),
            ]
        );
        assert_eq!(
            fields.spki,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der();
        for cut in 0..der.len() {
            assert!(parse_certificate(&der[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn decodes_oids() {
        assert_eq!(decode_oid(&[0x55, 0x04, 0x03]).unwrap(), vec![2, 5, 4, 3]);
        assert_eq!(
            decode_oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]).unwrap(),
            vec![1, 2, 840, 10045, 2, 1]
        );
    }
}
