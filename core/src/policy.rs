//! TODO(owner): see docs/contract.md
