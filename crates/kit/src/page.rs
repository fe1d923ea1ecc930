//! Page sizes, the same bounds in every service.

use crate::ServiceError;

/// Largest page any listing returns.
pub const PAGE_MAX: u32 = 100;

/// The page size asked for, bounded to 1..=PAGE_MAX.
pub fn page_size(first: u32) -> Result<u64, ServiceError> {
    if first == 0 || first > PAGE_MAX {
        return Err(ServiceError::invalid(
            "first",
            format!("must be between 1 and {PAGE_MAX}"),
        ));
    }
    Ok(u64::from(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_bounded() {
        assert!(page_size(0).is_err());
        assert!(page_size(PAGE_MAX + 1).is_err());
        assert_eq!(page_size(20).expect("valid"), 20);
    }
}
