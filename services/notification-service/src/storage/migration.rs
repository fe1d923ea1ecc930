//! Schema of notification-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations: Vec<Box<dyn MigrationTrait>> =
            vec![Box::new(CreateNotifications), Box::new(KeepUnfollowedPairs)];
        migrations.extend(oba_kit::consumer::migrations());
        migrations
    }
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    RecipientId,
    Kind,
    ActorId,
    PostId,
    CreatedAt,
    ReadAt,
}

#[derive(DeriveIden)]
enum Followers {
    Table,
    FolloweeId,
    FollowerId,
    Following,
    Version,
}

struct CreateNotifications;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreateNotifications {
    fn name(&self) -> &str {
        "m20261129_000001_create_notifications"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateNotifications {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Notifications::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Notifications::RecipientId).uuid().not_null())
                    .col(
                        ColumnDef::new(Notifications::Kind)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Notifications::ActorId).uuid().not_null())
                    .col(ColumnDef::new(Notifications::PostId).uuid().null())
                    .col(
                        ColumnDef::new(Notifications::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Notifications::ReadAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Every read is one recipient's notifications, newest first.
        manager
            .create_index(
                Index::create()
                    .name("notifications_recipient_id_id_idx")
                    .table(Notifications::Table)
                    .col(Notifications::RecipientId)
                    .col(Notifications::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Followers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Followers::FolloweeId).uuid().not_null())
                    .col(ColumnDef::new(Followers::FollowerId).uuid().not_null())
                    .primary_key(
                        Index::create()
                            .col(Followers::FolloweeId)
                            .col(Followers::FollowerId),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Followers keep the pair's last event: whether it follows, and the event's id. Rows of
/// before are follows (an unfollow deleted its row) with no version, so any event wins.
struct KeepUnfollowedPairs;

impl MigrationName for KeepUnfollowedPairs {
    fn name(&self) -> &str {
        "m20261202_000001_keep_unfollowed_pairs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for KeepUnfollowedPairs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Followers::Table)
                    .add_column(
                        ColumnDef::new(Followers::Following)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Followers::Table)
                    .add_column(ColumnDef::new(Followers::Version).uuid().null())
                    .to_owned(),
            )
            .await
    }
}
