//! Schema of user-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateUsers),
            Box::new(CreateFollows),
            Box::new(oba_kit::outbox::CreateOutbox),
            Box::new(CreateSignInAttempts),
            Box::new(oba_kit::outbox::DropPendingIndex),
        ]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    Email,
    PasswordHash,
    Bio,
    Image,
    Role,
    CreatedAt,
    UpdatedAt,
}

struct CreateUsers;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreateUsers {
    fn name(&self) -> &str {
        "m20261129_000001_create_users"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateUsers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Users::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Users::Username).string_len(32).not_null())
                    .col(ColumnDef::new(Users::Email).string_len(254).not_null())
                    .col(ColumnDef::new(Users::PasswordHash).string().not_null())
                    .col(ColumnDef::new(Users::Bio).text().not_null().default(""))
                    .col(ColumnDef::new(Users::Image).text().not_null().default(""))
                    .col(ColumnDef::new(Users::Role).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Users::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Users::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Named unique indexes: the store maps a violation to the field by these names.
        for (name, column) in [
            ("users_username_key", Users::Username),
            ("users_email_key", Users::Email),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(column)
                        .unique()
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Follows {
    Table,
    FollowerId,
    FolloweeId,
    CreatedAt,
}

struct CreateFollows;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreateFollows {
    fn name(&self) -> &str {
        "m20261129_000002_create_follows"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateFollows {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Follows::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Follows::FollowerId).uuid().not_null())
                    .col(ColumnDef::new(Follows::FolloweeId).uuid().not_null())
                    .col(
                        ColumnDef::new(Follows::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    // The pair is the key: following twice is one row.
                    .primary_key(
                        Index::create()
                            .col(Follows::FollowerId)
                            .col(Follows::FolloweeId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("follows_follower_id_fkey")
                            .from(Follows::Table, Follows::FollowerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("follows_followee_id_fkey")
                            .from(Follows::Table, Follows::FolloweeId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // "Who follows X" (notifications) reads by followee.
        manager
            .create_index(
                Index::create()
                    .name("follows_followee_id_idx")
                    .table(Follows::Table)
                    .col(Follows::FolloweeId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Follows::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SignInAttempts {
    Table,
    Email,
    WindowStartedAt,
    Attempts,
}

struct CreateSignInAttempts;

impl MigrationName for CreateSignInAttempts {
    fn name(&self) -> &str {
        "m20261129_000003_create_sign_in_attempts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSignInAttempts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Counted in the database, not in memory, so that every replica shares the limit.
        manager
            .create_table(
                Table::create()
                    .table(SignInAttempts::Table)
                    .if_not_exists()
                    // Any email tried, known or not: refusing only known ones would tell which exist.
                    .col(
                        ColumnDef::new(SignInAttempts::Email)
                            .string_len(254)
                            .not_null()
                            .primary_key(),
                    )
                    // Unix seconds: compared as numbers the same way on SQLite and PostgreSQL.
                    .col(
                        ColumnDef::new(SignInAttempts::WindowStartedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SignInAttempts::Attempts)
                            .integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SignInAttempts::Table).to_owned())
            .await
    }
}
