//! Schema of rank-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations: Vec<Box<dyn MigrationTrait>> =
            vec![Box::new(CreateRankPosts), Box::new(KeepDeletedPosts)];
        migrations.extend(oba_kit::consumer::migrations());
        migrations
    }
}

#[derive(DeriveIden)]
enum RankPosts {
    Table,
    PostId,
    CreatedAt,
    Likes,
    Comments,
    Views,
    Deleted,
}

struct CreateRankPosts;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreateRankPosts {
    fn name(&self) -> &str {
        "m20261129_000001_create_rank_posts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateRankPosts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RankPosts::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RankPosts::PostId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RankPosts::CreatedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(RankPosts::Likes)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(RankPosts::Comments)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(RankPosts::Views)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        // Trending reads the recent window.
        manager
            .create_index(
                Index::create()
                    .name("rank_posts_created_at_idx")
                    .table(RankPosts::Table)
                    .col(RankPosts::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// A deleted post keeps its row, marked, instead of losing it: see `entity::Model::deleted`.
struct KeepDeletedPosts;

impl MigrationName for KeepDeletedPosts {
    fn name(&self) -> &str {
        "m20261202_000001_keep_deleted_posts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for KeepDeletedPosts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RankPosts::Table)
                    .add_column(
                        ColumnDef::new(RankPosts::Deleted)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }
}
