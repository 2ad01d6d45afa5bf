pub mod fake_aws;
pub mod moto;
