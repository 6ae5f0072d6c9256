//! Call control between scheduler and dialer nodes over gRPC.
