//! Node attributes: ONNX's names and types, one canonical schema per op.
//!
//! The frontend fills in nothing: a missing attribute means "ONNX's default",
//! and the accessors below take that default at the point of use, so the
//! default is written once, next to the code that relies on it.

use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Tensor(Tensor),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strs(Vec<String>),
}

impl Attr {
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "int",
            Attr::Float(_) => "float",
            Attr::Str(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Ints(_) => "ints",
            Attr::Floats(_) => "floats",
            Attr::Strs(_) => "strings",
        }
    }
}

/// A node's attributes, ordered by name (so printing is deterministic).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, Attr>);

fn wrong(name: &str, want: &str, got: &Attr) -> Error {
    Error::Attr { attr: name.to_string(), msg: format!("expected {want}, found {}", got.kind()) }
}

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn set(&mut self, name: &str, a: Attr) {
        self.0.insert(name.to_string(), a);
    }

    /// Builder form of [`Attrs::set`].
    pub fn with(mut self, name: &str, a: Attr) -> Attrs {
        self.set(name, a);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<Attr> {
        self.0.remove(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Attr)> {
        self.0.iter()
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(wrong(name, "int", a)),
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            // ONNX files sometimes carry an int where a float is meant.
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(a) => Err(wrong(name, "float", a)),
        }
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> Result<Option<&[i64]>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(a) => Err(wrong(name, "ints", a)),
        }
    }

    pub fn floats(&self, name: &str) -> Result<Option<&[f32]>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(a) => Err(wrong(name, "floats", a)),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<&str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Str(v)) => Ok(Some(v)),
            Some(a) => Err(wrong(name, "string", a)),
        }
    }

    pub fn str_or<'a>(&'a self, name: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.str(name)?.unwrap_or(default))
    }

    pub fn strs(&self, name: &str) -> Result<Option<&[String]>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Strs(v)) => Ok(Some(v)),
            Some(a) => Err(wrong(name, "strings", a)),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&Tensor>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(v)) => Ok(Some(v)),
            Some(a) => Err(wrong(name, "tensor", a)),
        }
    }
}
