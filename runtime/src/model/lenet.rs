//! LeNet-5 (LeCun et al. 1998) for 28x28 grey images (Fashion-MNIST), the model of
//! Flower's niid-bench baseline: conv 5x5 (6, padded by 2 as LeNet-5 pads MNIST to 32x32)
//! - ReLU - max-pool 2 - conv 5x5 (16) - ReLU - max-pool 2 - fc 120 - ReLU - fc 84 - ReLU
//! - fc 10: 61,706 parameters.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// LeNet-5's sizes.
#[derive(Config, Debug)]
pub struct LeNetConfig {
    /// Output classes.
    #[config(default = 10)]
    pub classes: usize,
}

/// The network; build it with [`LeNetConfig::init`].
#[derive(Module, Debug)]
pub struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

/// Features after the second pooling: 16 channels of 5x5.
const FLAT: usize = 16 * 5 * 5;

impl LeNetConfig {
    /// A randomly initialised network on `device` (seed the device for reproducibility).
    pub fn init(&self, device: &Device) -> LeNet {
        LeNet {
            conv1: Conv2dConfig::new([1, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(FLAT, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, self.classes).init(device),
        }
    }
}

impl LeNet {
    /// Class logits.
    ///
    /// # Shapes
    /// - `images`: `[batch, 1, 28, 28]`, pixels scaled to [0, 1]
    /// - output: `[batch, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(images))); // [b, 6, 14, 14]
        let x = self.pool.forward(relu(self.conv2.forward(x))); // [b, 16, 5, 5]
        let x = x.flatten::<2>(1, 3);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params;
    use burn::tensor::TensorData;

    #[test]
    fn has_lenet5s_parameter_count_and_output_shape() {
        let device = Device::flex();
        let model = LeNetConfig::new().init(&device);
        let layout = params::layout(&model);
        // 156 + 2,416 + 48,120 + 10,164 + 850: LeNet-5's published count.
        assert_eq!(layout.len(), 61_706);
        assert_eq!(layout.specs()[0].name, "conv1.weight");
        assert_eq!(layout.specs()[0].shape, [6, 1, 5, 5]);
        let images = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32; 3 * 784], [3, 1, 28, 28]),
            &device,
        );
        assert_eq!(model.forward(images).dims(), [3, 10]);
    }

    #[test]
    fn flatten_and_load_round_trip_exactly() {
        let device = Device::flex();
        device.seed(5);
        let a = LeNetConfig::new().init(&device);
        device.seed(6);
        let b = LeNetConfig::new().init(&device);
        let (wa, wb) = (params::flatten(&a), params::flatten(&b));
        assert_ne!(wa, wb);
        let b = params::load(b, &wa);
        assert_eq!(params::flatten(&b), wa);
    }
}
