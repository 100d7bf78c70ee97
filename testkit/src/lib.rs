//! Real test fixtures for Capstan's tests: no mocks.
