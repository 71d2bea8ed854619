//! The `.kir` text form (placeholder: printer and parser come next).
