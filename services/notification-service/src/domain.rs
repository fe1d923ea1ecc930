//! Who is notified of what, free of I/O.

use uuid::Uuid;

/// What happened, from the recipient's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Followed,
    Commented,
    Liked,
    Published,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Followed => "FOLLOWED",
            Self::Commented => "COMMENTED",
            Self::Liked => "LIKED",
            Self::Published => "PUBLISHED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Followed,
            Self::Commented,
            Self::Liked,
            Self::Published,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A notification to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub recipient: Uuid,
    pub kind: Kind,
    pub actor: Uuid,
    pub post: Option<Uuid>,
}

/// Nobody is notified of their own actions (liking or commenting on their own post).
pub fn about_someone_else(
    recipient: Option<Uuid>,
    actor: Uuid,
    kind: Kind,
    post: Option<Uuid>,
) -> Option<NewNotification> {
    let recipient = recipient?;
    (recipient != actor).then_some(NewNotification {
        recipient,
        kind,
        actor,
        post,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_actions_notify_nobody() {
        let (me, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(about_someone_else(Some(me), me, Kind::Liked, None), None);
        assert_eq!(about_someone_else(None, me, Kind::Liked, None), None);
        let n = about_someone_else(Some(other), me, Kind::Liked, None).expect("notified");
        assert_eq!((n.recipient, n.actor), (other, me));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            Kind::Followed,
            Kind::Commented,
            Kind::Liked,
            Kind::Published,
        ] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("nonsense"), None);
    }
}
