//! Schema of post-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreatePosts),
            Box::new(oba_kit::outbox::CreateOutbox),
            Box::new(oba_kit::outbox::DropPendingIndex),
        ]
    }
}

#[derive(DeriveIden)]
enum Posts {
    Table,
    Id,
    Slug,
    Title,
    Description,
    Body,
    AuthorId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PostTags {
    Table,
    PostId,
    Tag,
    Position,
}

struct CreatePosts;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreatePosts {
    fn name(&self) -> &str {
        "m20261129_000001_create_posts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePosts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Posts::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Posts::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Posts::Slug).string_len(128).not_null())
                    .col(ColumnDef::new(Posts::Title).string_len(200).not_null())
                    .col(ColumnDef::new(Posts::Description).text().not_null())
                    .col(ColumnDef::new(Posts::Body).text().not_null())
                    .col(ColumnDef::new(Posts::AuthorId).uuid().not_null())
                    .col(
                        ColumnDef::new(Posts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Posts::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Named so that a violation is recognisable as "slug taken" and retried.
        manager
            .create_index(
                Index::create()
                    .name("posts_slug_key")
                    .table(Posts::Table)
                    .col(Posts::Slug)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Listing by author is a query of its own (profile pages, feeds).
        manager
            .create_index(
                Index::create()
                    .name("posts_author_id_idx")
                    .table(Posts::Table)
                    .col(Posts::AuthorId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PostTags::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(PostTags::PostId).uuid().not_null())
                    .col(ColumnDef::new(PostTags::Tag).string_len(32).not_null())
                    .col(ColumnDef::new(PostTags::Position).integer().not_null())
                    .primary_key(Index::create().col(PostTags::PostId).col(PostTags::Tag))
                    .foreign_key(
                        ForeignKey::create()
                            .name("post_tags_post_id_fkey")
                            .from(PostTags::Table, PostTags::PostId)
                            .to(Posts::Table, Posts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Filtering posts by tag looks tags up first.
        manager
            .create_index(
                Index::create()
                    .name("post_tags_tag_idx")
                    .table(PostTags::Table)
                    .col(PostTags::Tag)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PostTags::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Posts::Table).to_owned())
            .await
    }
}
