//! A burn module's float parameters as one flat `f32` vector and back: what federated
//! learning averages, compresses and sends. The order is the module's visiting order,
//! and [`layout`] names every tensor, so two sides can check that they agree.
//!
//! The `_where` forms take only the parameters whose dotted path passes a filter: the
//! trainable part of a mostly frozen model (MiniLM's LoRA adapters and head), the rest
//! left as it is.

use crate::fl::{Layout, TensorSpec};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

/// Which parameters, by dotted path (`encoder.layer.0.attention.self_attn.query.weight`).
pub type PathFilter<'a> = &'a dyn Fn(&str) -> bool;

fn every(_: &str) -> bool {
    true
}

/// The dotted path of the module being visited.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn joined(&self) -> String {
        self.0.join(".")
    }
}

/// The names and shapes of `module`'s float parameters, in visiting order.
pub fn layout<M: Module>(module: &M) -> Layout {
    layout_where(module, &every)
}

/// The names and shapes of `module`'s float parameters that `keep` passes.
pub fn layout_where<M: Module>(module: &M, keep: PathFilter) -> Layout {
    struct Specs<'a> {
        path: Path,
        keep: PathFilter<'a>,
        specs: Vec<TensorSpec>,
    }
    impl ModuleVisitor for Specs<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let name = self.path.joined();
            if (self.keep)(&name) {
                self.specs.push(TensorSpec {
                    name,
                    shape: param.val().dims().to_vec(),
                });
            }
        }
    }
    let mut visitor = Specs {
        path: Path::default(),
        keep,
        specs: Vec::new(),
    };
    module.visit(&mut visitor);
    Layout::new(visitor.specs)
}

/// `module`'s float parameters, concatenated in visiting order.
pub fn flatten<M: Module>(module: &M) -> Vec<f32> {
    flatten_where(module, &every)
}

/// `module`'s float parameters that `keep` passes, concatenated in visiting order.
pub fn flatten_where<M: Module>(module: &M, keep: PathFilter) -> Vec<f32> {
    struct Values<'a> {
        path: Path,
        keep: PathFilter<'a>,
        values: Vec<f32>,
    }
    impl ModuleVisitor for Values<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !(self.keep)(&self.path.joined()) {
                return;
            }
            let data = param.val().into_data();
            // Float parameters are f32 on every backend tandem uses.
            if let Ok(values) = data.try_to_vec::<f32>() {
                self.values.extend_from_slice(&values);
            }
        }
    }
    let mut visitor = Values {
        path: Path::default(),
        keep,
        values: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.values
}

/// `module` with its float parameters replaced by `values` (as [`flatten`] lays them out).
///
/// # Panics
/// If `values` is shorter than the module's parameters; callers check the length against
/// [`layout`] first.
pub fn load<M: Module>(module: M, values: &[f32]) -> M {
    load_where(module, values, &every)
}

/// `module` with the float parameters `keep` passes replaced by `values` (as
/// [`flatten_where`] lays them out); the others are left untouched.
///
/// # Panics
/// If `values` is shorter than those parameters; callers check the length against
/// [`layout_where`] first.
pub fn load_where<M: Module>(module: M, values: &[f32], keep: PathFilter) -> M {
    struct Loader<'a> {
        path: Path,
        keep: PathFilter<'a>,
        values: &'a [f32],
    }
    impl ModuleMapper for Loader<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !(self.keep)(&self.path.joined()) {
                return param;
            }
            param.map(|old| {
                let dims = old.dims();
                let n: usize = dims.iter().product();
                let (mine, rest) = self.values.split_at(n);
                self.values = rest;
                let fresh =
                    Tensor::<D>::from_data(TensorData::new(mine.to_vec(), dims), &old.device());
                if old.is_require_grad() {
                    fresh.require_grad()
                } else {
                    fresh
                }
            })
        }
    }
    module.map(&mut Loader {
        path: Path::default(),
        keep,
        values,
    })
}
