//! The gRPC face of user-service: requests in, domain rules, store, responses out.
//!
//! A session is minted only after a password was verified (register, login) or for the
//! verified caller's own account (update); whose account a call is about always comes from
//! the caller's token, never from the request.

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use oba_kit::ServiceError;
use oba_kit::auth::{Caller, Role, TokenSigner};
use oba_proto::time::timestamp;
use oba_proto::user::v1 as pb;
use pb::user_service_server::UserService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use std::collections::HashSet;

use oba_kit::error::parse_ids;
use oba_proto::common::v1::IdSet;

use crate::domain::{
    EMAIL_MAX, Email, Password, Username, parse_bio, parse_image_url, password_matches,
};
use crate::storage::{Account, AccountChanges, NewAccount, SignInAttempts, UserStore, role_of};

pub struct UserGrpc {
    store: UserStore,
    signer: TokenSigner,
    hashing: PasswordHashing,
    /// Sign-in attempts per account (lower-cased email), whoever makes them, on any replica.
    logins: SignInAttempts,
}

/// Password hashing with bounded cost: at most `in_flight` argon2 hashes run at once, on the
/// blocking pool (each holds 19 MiB while it runs), a few more wait for a slot, and the rest
/// are refused at once with TOO_MANY_REQUESTS. Memory stays bounded at any sign-in rate.
pub struct PasswordHashing {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
}

/// Requests that may wait for a hashing slot, per slot.
const WAITING_PER_SLOT: usize = 32;

impl PasswordHashing {
    pub fn new(in_flight: NonZeroUsize) -> Self {
        let in_flight = in_flight.get();
        Self {
            running: Arc::new(Semaphore::new(in_flight)),
            waiting: Arc::new(Semaphore::new(in_flight * (1 + WAITING_PER_SLOT))),
        }
    }

    /// Runs `work` (argon2) when a slot is free, or refuses it if too many already wait.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _waiting = self.waiting.clone().try_acquire_owned().map_err(|_| {
            ServiceError::TooManyRequests {
                message: "too many sign-ins at once; try again in a moment".into(),
                retry_after_secs: 1,
            }
        })?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ServiceError::Internal(format!("hashing slots closed: {e}")))?;
        off_runtime(work).await
    }
}

impl UserGrpc {
    pub fn new(
        store: UserStore,
        signer: TokenSigner,
        hashing: PasswordHashing,
        logins: SignInAttempts,
    ) -> Self {
        Self {
            store,
            signer,
            hashing,
            logins,
        }
    }

    async fn account_named(&self, username: &str) -> Result<Account, ServiceError> {
        self.store
            .by_username(username)
            .await?
            .ok_or(ServiceError::NotFound("profile"))
    }

    fn session(&self, account: Account) -> Result<pb::Session, ServiceError> {
        let token = self
            .signer
            .sign(account.id, &account.username, role_of(&account))
            .map_err(|e| ServiceError::Internal(format!("signing token: {e}")))?;
        Ok(pb::Session {
            token,
            user: Some(user_message(&account)),
        })
    }
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = request.into_inner();
        let username = Username::parse(&req.username)?;
        let email = Email::parse(&req.email)?;
        let password = Password::parse(&req.password)?;
        let password_hash = self.hashing.run(move || password.hash()).await?;
        let account = self
            .store
            .insert(NewAccount {
                username,
                email,
                password_hash,
                role: Role::User,
            })
            .await?;
        tracing::info!(user_id = %account.id, "account registered");
        Ok(Response::new(self.session(account)?))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = request.into_inner();
        let email = req.email.trim().to_lowercase();
        if email.chars().count() > EMAIL_MAX {
            // No account has such an address; it would not fit the attempts table either.
            return Err(
                ServiceError::Unauthenticated("email or password is invalid".into()).into(),
            );
        }
        self.logins.count(&email).await?;
        let account = self.store.by_email(&req.email).await?;
        // An unknown email costs a hash check too, so timing does not reveal which emails exist.
        let stored = account
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |a| a.password_hash.clone());
        let password = req.password;
        let matches = self
            .hashing
            .run(move || Ok(password_matches(&password, &stored)))
            .await?;
        match account {
            Some(account) if matches => Ok(Response::new(self.session(account)?)),
            _ => Err(ServiceError::Unauthenticated("email or password is invalid".into()).into()),
        }
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = Caller::of(&request).user()?.user_id;
        let account = self
            .store
            .by_id(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        Ok(Response::new(user_message(&account)))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let id = Caller::of(&request).user()?.user_id;
        let req = request.into_inner();
        let password_hash = match req.password {
            Some(raw) => {
                let password = Password::parse(&raw)?;
                Some(self.hashing.run(move || password.hash()).await?)
            }
            None => None,
        };
        let changes = AccountChanges {
            username: req.username.as_deref().map(Username::parse).transpose()?,
            email: req.email.as_deref().map(Email::parse).transpose()?,
            password_hash,
            bio: req.bio.as_deref().map(parse_bio).transpose()?,
            image: req.image.as_deref().map(parse_image_url).transpose()?,
        };
        let account = self.store.update(id, changes).await?;
        Ok(Response::new(self.session(account)?))
    }

    async fn get_profiles(
        &self,
        request: Request<pb::GetProfilesRequest>,
    ) -> Result<Response<pb::GetProfilesResponse>, Status> {
        let viewer = Caller::of(&request).viewer();
        let ids = parse_ids("ids", &request.into_inner().ids)?;
        let accounts = self.store.by_ids(ids).await?;
        let followed = match viewer {
            Some(viewer) => {
                let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
                self.store.followed_among(viewer, &ids).await?
            }
            None => HashSet::new(),
        };
        let profiles = accounts
            .iter()
            .map(|a| profile_message(a, followed.contains(&a.id)))
            .collect();
        Ok(Response::new(pb::GetProfilesResponse { profiles }))
    }

    async fn get_profile_by_username(
        &self,
        request: Request<pb::GetProfileByUsernameRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let viewer = Caller::of(&request).viewer();
        let account = self.account_named(&request.into_inner().username).await?;
        let following = match viewer {
            Some(viewer) => self
                .store
                .followed_among(viewer, &[account.id])
                .await?
                .contains(&account.id),
            None => false,
        };
        Ok(Response::new(profile_message(&account, following)))
    }

    async fn follow(
        &self,
        request: Request<pb::FollowRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let follower = Caller::of(&request).user()?.user_id;
        let followee = self.account_named(&request.into_inner().username).await?;
        if followee.id == follower {
            return Err(ServiceError::invalid("username", "you cannot follow yourself").into());
        }
        self.store.follow(follower, followee.id).await?;
        Ok(Response::new(profile_message(&followee, true)))
    }

    async fn unfollow(
        &self,
        request: Request<pb::FollowRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let follower = Caller::of(&request).user()?.user_id;
        let followee = self.account_named(&request.into_inner().username).await?;
        self.store.unfollow(follower, followee.id).await?;
        Ok(Response::new(profile_message(&followee, false)))
    }

    async fn list_following(
        &self,
        request: Request<pb::ListFollowingRequest>,
    ) -> Result<Response<IdSet>, Status> {
        let user = Caller::of(&request).user()?.user_id;
        let ids = self
            .store
            .following(user)
            .await?
            .iter()
            .map(Uuid::to_string)
            .collect();
        Ok(Response::new(IdSet { ids }))
    }
}

/// Creates the configured admin account, or promotes it if it exists.
pub async fn bootstrap_admin(
    store: &UserStore,
    admin: &crate::AdminAccount,
) -> Result<(), ServiceError> {
    let username = Username::parse(&admin.username)?;
    let email = Email::parse(&admin.email)?;
    let password = Password::parse(&admin.password)?;
    let password_hash = off_runtime(move || password.hash()).await?;
    let account = store
        .ensure_admin(NewAccount {
            username,
            email,
            password_hash,
            role: Role::Admin,
        })
        .await?;
    tracing::info!(user_id = %account.id, "admin account ready");
    Ok(())
}

/// Runs CPU-heavy work (argon2) on the blocking pool so it never stalls the async runtime.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))?
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        Password::parse("not-a-real-password")
            .and_then(|p| p.hash())
            .unwrap_or_default()
    })
}

fn user_message(a: &Account) -> pb::User {
    pb::User {
        id: a.id.to_string(),
        username: a.username.clone(),
        email: a.email.clone(),
        bio: a.bio.clone(),
        image: a.image.clone(),
        role: match role_of(a) {
            Role::User => pb::Role::User,
            Role::Admin => pb::Role::Admin,
        }
        .into(),
        created_at: Some(timestamp(a.created_at)),
    }
}

fn profile_message(a: &Account, following: bool) -> pb::Profile {
    pb::Profile {
        id: a.id.to_string(),
        username: a.username.clone(),
        bio: a.bio.clone(),
        image: a.image.clone(),
        following,
    }
}
