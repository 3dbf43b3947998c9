pub mod agent;
pub mod apply;
pub mod bao;
pub mod ca;
pub mod plan;
pub mod render;
pub mod status;
pub mod verify;
