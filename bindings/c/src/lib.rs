//! C ABI for creditgate (see include/creditgate.h).
