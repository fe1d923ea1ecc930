//! gRPC contracts of oba, generated at build time from the `.proto` files in `/proto`.
//!
//! Module paths follow the proto packages: `oba.post.v1` is [`post::v1`].

pub mod common {
    pub mod v1 {
        tonic::include_proto!("oba.common.v1");
    }
}

pub mod user {
    pub mod v1 {
        tonic::include_proto!("oba.user.v1");
    }
}

pub mod post {
    pub mod v1 {
        tonic::include_proto!("oba.post.v1");
    }
}

pub mod comment {
    pub mod v1 {
        tonic::include_proto!("oba.comment.v1");
    }
}

pub mod like {
    pub mod v1 {
        tonic::include_proto!("oba.like.v1");
    }
}

pub mod event {
    pub mod v1 {
        tonic::include_proto!("oba.event.v1");
    }
}

pub mod rank {
    pub mod v1 {
        tonic::include_proto!("oba.rank.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("oba.notification.v1");
    }
}

/// The path of every gRPC method defined in `/proto` (`/oba.post.v1.PostService/ListPosts`),
/// sorted.
pub mod methods {
    include!(concat!(env!("OUT_DIR"), "/methods.rs"));

    /// Whether `path` names a method of oba's contracts or of the standard health protocol.
    pub fn is_known(path: &str) -> bool {
        METHODS.binary_search(&path).is_ok()
            || matches!(
                path,
                "/grpc.health.v1.Health/Check" | "/grpc.health.v1.Health/Watch"
            )
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn real_methods_are_known_and_made_up_ones_are_not() {
            assert!(super::is_known("/oba.post.v1.PostService/ListPosts"));
            assert!(super::is_known("/grpc.health.v1.Health/Check"));
            assert!(!super::is_known("/oba.post.v1.PostService/Nope"));
            assert!(!super::is_known("/\"/x"));
        }
    }
}

/// Conversions between protobuf timestamps and `chrono` times.
pub mod time {
    use chrono::{DateTime, Utc};
    use prost_types::Timestamp;

    pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
        Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }

    /// The time of `ts`; a missing or out-of-range timestamp reads as the Unix epoch.
    pub fn datetime(ts: Option<&Timestamp>) -> DateTime<Utc> {
        ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
            .unwrap_or_default()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_keeps_microseconds() {
            let at = DateTime::from_timestamp(1_790_000_000, 123_456_000).expect("valid");
            assert_eq!(datetime(Some(&timestamp(at))), at);
            assert_eq!(datetime(None), DateTime::<Utc>::default());
        }
    }
}
