//! Remote hosts of the vxlan overlay (being built).
