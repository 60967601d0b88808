//! Parts' page indexes kept in DataFusion's file metadata cache.
//!
//! DataFusion caches a Parquet file's footer between queries, but opens a
//! file without its page index and, when a filter needs it, reads and
//! parses the page index again for every query. A part's page index holds
//! one entry per page of every column (2,048-row pages; more columns with
//! attribute key columns), and a token search over a day opened a dozen of
//! them per query: 2 MB read and parsed each time (BENCHMARKS.md, "Attribute
//! key columns"). Parts never change, so the readers here ask for the page
//! index with the footer, and the cache then serves both (up to its size
//! limit, DataFusion's `metadata_cache_limit`, least recently used out).

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

/// `plan` with every Parquet scan in it reading through [`WithPageIndex`].
pub fn cache_page_indexes(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn datafusion::catalog::Session,
) -> Result<Arc<dyn ExecutionPlan>> {
    let runtime = state.runtime_env();
    let factory: Arc<dyn ParquetFileReaderFactory> =
        Arc::new(WithPageIndex(CachedParquetFileReaderFactory::new(
            runtime.object_store(ObjectStoreUrl::local_filesystem())?,
            runtime.cache_manager.get_file_metadata_cache(),
        )));
    plan.transform_up(|node| {
        let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(Transformed::no(node));
        };
        let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        let source = source
            .clone()
            .with_parquet_file_reader_factory(Arc::clone(&factory));
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        Ok(Transformed::yes(DataSourceExec::from_data_source(config)))
    })
    .data()
}

/// DataFusion's caching reader factory, whose readers always ask for the
/// page index with the footer (so the cache keeps both).
#[derive(Debug)]
struct WithPageIndex(CachedParquetFileReaderFactory);

impl ParquetFileReaderFactory for WithPageIndex {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let inner = self
            .0
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(PageIndexReader(inner)))
    }
}

struct PageIndexReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for PageIndexReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use crate::embedded::tests::logs_parts;
    use crate::manifest::HOUR_NANOS;

    /// After a query, each part's cached metadata holds its page index,
    /// and the next query finds it there.
    #[tokio::test]
    async fn a_parts_page_index_is_cached_with_its_footer() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000_000_000_000 / HOUR_NANOS * HOUR_NANOS;
        logs_parts(
            dir.path(),
            &[("a", &[t0 + 1, t0 + 2]), ("b", &[t0 + HOUR_NANOS + 1])],
        );
        let ctx = crate::sql::session(dir.path()).unwrap();
        let sql = "SELECT count(*) FROM otel_logs WHERE ServiceName = 'a'";
        let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
        crate::sql::run(&ctx, sql, 1).await.unwrap();
        let entries = cache.list_entries();
        assert_eq!(entries.len(), 2, "both parts opened");
        for (path, entry) in &entries {
            let info = entry.value.file_metadata.extra_info();
            assert_eq!(info["page_index"], "true", "{path}");
        }
        crate::sql::run(&ctx, sql, 1).await.unwrap();
        let hits: usize = cache.list_entries().values().map(|e| e.hits).sum();
        assert!(hits >= 2, "the second query read the cache ({hits} hits)");
    }
}
