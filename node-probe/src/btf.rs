//! A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! Rust eBPF programs get no CO-RE relocations, so the loader resolves the few struct field
//! offsets the programs read and the names of `enum skb_drop_reason` from the running kernel.
//! Only the parts of the format needed for that are decoded; everything else is skipped by size.

use std::collections::HashMap;

/// Errors while reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The blob is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A type the programs need is not in this kernel.
    #[error("type {0} not found in kernel BTF")]
    TypeNotFound(String),
    /// A field path does not exist in this kernel.
    #[error("field {0} not found in kernel BTF")]
    FieldNotFound(String),
    /// Reading the file failed.
    #[error("reading BTF: {0}")]
    Io(#[from] std::io::Error),
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Ty {
    /// struct or union.
    Composite { name: u32, members: Vec<Member> },
    /// typedef / const / volatile / restrict / type tag: follow to `to`.
    Alias { to: u32 },
    /// enum or enum64 (values truncated to i64).
    Enum { name: u32, values: Vec<(u32, i64)> },
    /// Anything else.
    Other,
}

/// Parsed kernel BTF: types by id plus the string table.
pub struct Btf {
    types: Vec<Ty>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::parse(&std::fs::read("/sys/kernel/btf/vmlinux")?)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        if b.len() < 24 || b[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_b = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of range"))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of range"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Ty::Other];
        let mut p = 0;
        while p < types_b.len() {
            let name = u32_at(types_b, p)?;
            let info = u32_at(types_b, p + 4)?;
            let size_or_type = u32_at(types_b, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let off = u32_at(types_b, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_b, m)?,
                            ty: u32_at(types_b, m + 4)?,
                            bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        });
                    }
                    p += vlen * 12;
                    Ty::Composite { name, members }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = p + i * 8;
                        values.push((u32_at(types_b, m)?, u32_at(types_b, m + 4)? as i32 as i64));
                    }
                    p += vlen * 8;
                    Ty::Enum { name, values }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let v = (u64::from(u32_at(types_b, m + 8)?) << 32)
                            | u64::from(u32_at(types_b, m + 4)?);
                        values.push((u32_at(types_b, m)?, v as i64));
                    }
                    p += vlen * 12;
                    Ty::Enum { name, values }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Ty::Alias { to: size_or_type }
                }
                // INT, VAR, DECL_TAG: one u32; ARRAY, DATASEC: 12 bytes; FUNC_PROTO: 8 per param.
                1 | 14 | 17 => {
                    p += 4;
                    Ty::Other
                }
                3 => {
                    p += 12;
                    Ty::Other
                }
                13 => {
                    p += vlen * 8;
                    Ty::Other
                }
                15 => {
                    p += vlen * 12;
                    Ty::Other
                }
                2 | 7 | 12 | 16 => Ty::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(ty);
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            let name = match t {
                Ty::Composite { name, .. } | Ty::Enum { name, .. } => *name,
                _ => continue,
            };
            if name != 0 {
                let n = btf.str_at(name).to_string();
                btf.by_name.entry(n).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn resolve(&self, mut id: u32) -> Option<&Ty> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Ty::Alias { to } => id = *to,
                t => return Some(t),
            }
        }
        None
    }

    fn composite(&self, name: &str) -> Result<u32, BtfError> {
        self.by_name
            .get(name)
            .and_then(|ids| {
                ids.iter().copied().find(|&id| {
                    matches!(&self.types[id as usize], Ty::Composite { members, .. } if !members.is_empty())
                })
            })
            .ok_or_else(|| BtfError::TypeNotFound(name.to_string()))
    }

    /// Finds `field` in composite `id`, looking through anonymous struct/union members.
    /// Returns (byte offset, member type id).
    fn find_member(&self, id: u32, field: &str, depth: u32) -> Option<(u32, u32)> {
        let Some(Ty::Composite { members, .. }) = self.resolve(id) else {
            return None;
        };
        for m in members {
            if m.name == 0 {
                if depth < 8
                    && let Some((off, ty)) = self.find_member(m.ty, field, depth + 1)
                {
                    return Some((m.bit_offset / 8 + off, ty));
                }
            } else if self.str_at(m.name) == field {
                return Some((m.bit_offset / 8, m.ty));
            }
        }
        None
    }

    /// Byte offset of a dotted field path inside a struct, e.g.
    /// `field_offset("sock", "__sk_common.skc_family")`.
    pub fn field_offset(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self.composite(ty)?;
        let mut total = 0;
        for part in path.split('.') {
            let (off, next) = self
                .find_member(id, part, 0)
                .ok_or_else(|| BtfError::FieldNotFound(format!("{ty}.{path}")))?;
            total += off;
            id = next;
        }
        Ok(total)
    }

    /// Values of an enum by name, e.g. `enum_values("skb_drop_reason")`.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        let ids = self
            .by_name
            .get(name)
            .ok_or_else(|| BtfError::TypeNotFound(name.to_string()))?;
        for &id in ids {
            if let Ty::Enum { values, .. } = &self.types[id as usize] {
                return Ok(values
                    .iter()
                    .map(|(n, v)| (self.str_at(*n).to_string(), *v))
                    .collect());
            }
        }
        Err(BtfError::TypeNotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Btf::parse(b"not btf at all, definitely not"),
            Err(BtfError::Malformed(_))
        ));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb, 1, 0]),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn resolves_kernel_fields() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        assert_eq!(
            btf.field_offset("sock", "__sk_common.skc_family").unwrap(),
            16
        );
        assert!(btf.field_offset("tcp_sock", "srtt_us").unwrap() > 1000);
        assert!(btf.field_offset("sock", "no_such_field").is_err());
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            reasons
                .iter()
                .any(|(n, v)| n == "SKB_DROP_REASON_NOT_SPECIFIED" && *v == 2)
        );
    }
}
