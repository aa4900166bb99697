//! Host tensors for the command-line tool: typed buffers with shapes, read
//! from and written to `.npy` files.

use anyhow::{Context, Result, bail};
use npyz::{AutoSerialize, WriterBuilder};
use passfold_dsl::ScalarType;
use std::path::Path;

/// A buffer of one element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// `i32` elements.
    I32(Vec<i32>),
}

/// A dense, row-major tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Extent of each dimension.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Data,
}

impl HostTensor {
    /// A tensor of zeros.
    pub fn zeros(ty: ScalarType, shape: Vec<usize>) -> Result<Self> {
        let n = element_count(&shape)?;
        let data = match ty {
            ScalarType::F32 => Data::F32(vec![0.0; n]),
            ScalarType::F64 => Data::F64(vec![0.0; n]),
            ScalarType::I32 => Data::I32(vec![0; n]),
            ScalarType::Bool => bail!("a tensor cannot hold `bool`"),
        };
        Ok(HostTensor { shape, data })
    }

    /// The element type.
    pub fn ty(&self) -> ScalarType {
        match self.data {
            Data::F32(_) => ScalarType::F32,
            Data::F64(_) => ScalarType::F64,
            Data::I32(_) => ScalarType::I32,
        }
    }

    /// The elements as `f64` (exact for every element type).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// A tensor of type `ty` from `f64` values (rounded to `f32`, truncated to `i32`).
    pub fn from_f64(ty: ScalarType, shape: Vec<usize>, values: &[f64]) -> Self {
        let data = match ty {
            ScalarType::F32 => Data::F32(values.iter().map(|&x| x as f32).collect()),
            ScalarType::I32 => Data::I32(values.iter().map(|&x| x as i32).collect()),
            _ => Data::F64(values.to_vec()),
        };
        HostTensor { shape, data }
    }

    /// Reads a `.npy` file (little-endian `f32`, `f64` or `i32`, C order).
    pub fn read_npy(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let npy = npyz::NpyFile::new(&bytes[..])
            .with_context(|| format!("{} is not a .npy file", path.display()))?;
        if npy.order() != npyz::Order::C {
            bail!(
                "{} is in Fortran order; passfold reads C-order arrays",
                path.display()
            );
        }
        let shape: Vec<usize> = npy
            .shape()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .context("shape too large")?;
        let dtype = npy.dtype();
        let data = if dtype == f32::default_dtype() {
            Data::F32(npy.into_vec()?)
        } else if dtype == f64::default_dtype() {
            Data::F64(npy.into_vec()?)
        } else if dtype == i32::default_dtype() {
            Data::I32(npy.into_vec()?)
        } else {
            bail!(
                "{} holds {}, expected little-endian f32, f64 or i32",
                path.display(),
                dtype.descr()
            );
        };
        Ok(HostTensor { shape, data })
    }

    /// Writes a `.npy` file.
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        let shape: Vec<u64> = self.shape.iter().map(|&d| d as u64).collect();
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let buf = std::io::BufWriter::new(file);
        match &self.data {
            Data::F32(v) => write_all(buf, &shape, v)?,
            Data::F64(v) => write_all(buf, &shape, v)?,
            Data::I32(v) => write_all(buf, &shape, v)?,
        }
        Ok(())
    }
}

fn write_all<T: AutoSerialize + Copy, W: std::io::Write>(
    w: W,
    shape: &[u64],
    data: &[T],
) -> Result<()> {
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(w)
        .begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()?;
    Ok(())
}

/// The number of elements of a shape, or an error if it overflows.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .context("the shape's element count overflows")
}
