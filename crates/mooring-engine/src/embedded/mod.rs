//! The embedded engine (redb): placeholder until the group-commit writer lands.
