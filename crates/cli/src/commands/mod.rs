pub mod apply;
pub mod ca;
pub mod plan;
pub mod verify;
