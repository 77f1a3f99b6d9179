//! A burn module's float parameters as one flat `f32` vector and back: what federated
//! learning averages, compresses and sends. The order is the module's visiting order,
//! and [`layout`] names every tensor, so two sides can check that they agree.

use crate::fl::{Layout, TensorSpec};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

/// The names and shapes of `module`'s float parameters, in visiting order.
pub fn layout<M: Module>(module: &M) -> Layout {
    struct Specs {
        path: Vec<String>,
        specs: Vec<TensorSpec>,
    }
    impl ModuleVisitor for Specs {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.specs.push(TensorSpec {
                name: self.path.join("."),
                shape: param.val().dims().to_vec(),
            });
        }
    }
    let mut visitor = Specs {
        path: Vec::new(),
        specs: Vec::new(),
    };
    module.visit(&mut visitor);
    Layout::new(visitor.specs)
}

/// `module`'s float parameters, concatenated in visiting order.
pub fn flatten<M: Module>(module: &M) -> Vec<f32> {
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            // Float parameters are f32 on every backend tandem uses.
            if let Ok(values) = data.try_to_vec::<f32>() {
                self.0.extend_from_slice(&values);
            }
        }
    }
    let mut visitor = Values(Vec::new());
    module.visit(&mut visitor);
    visitor.0
}

/// `module` with its float parameters replaced by `values` (as [`flatten`] lays them out).
///
/// # Panics
/// If `values` is shorter than the module's parameters; callers check the length against
/// [`layout`] first.
pub fn load<M: Module>(module: M, values: &[f32]) -> M {
    struct Loader<'a> {
        values: &'a [f32],
    }
    impl ModuleMapper for Loader<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
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
    module.map(&mut Loader { values })
}
