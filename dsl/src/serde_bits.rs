//! `f64` fields serialized as their bits, so infinities and NaN (a `-inf`
//! padding value, a max state's identity) survive formats like JSON.

pub mod option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(f64::to_bits).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(f64::from_bits))
    }
}

pub mod states {
    use crate::ir::VarId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(VarId, VarId, f64)], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(a, b, x)| (*a, *b, x.to_bits()))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(VarId, VarId, f64)>, D::Error> {
        Ok(Vec::<(VarId, VarId, u64)>::deserialize(d)?
            .into_iter()
            .map(|(a, b, x)| (a, b, f64::from_bits(x)))
            .collect())
    }
}
